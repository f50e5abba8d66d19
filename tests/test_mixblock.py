"""Mix Block: faithful forward maths (docs/algorithm.md#the-mix-block) and the mask losses (#mask-loss)."""
import math

import pytest
import torch
import torch.nn.functional as F

from automix_lite.core.mixblock import MASK_LOSS_MODES, MixBlock, attention_mask_logits, mask_loss


def _z(n=4, c=16, h=4, w=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, h, w, generator=g)


def _randomise(block, seed=1, std=0.3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return block


def test_channels_sum_to_one_and_match_input_size():
    block = _randomise(MixBlock(16))
    z, perm = _z(), torch.tensor([1, 2, 3, 0])
    mask = block(z, 0.3, perm, (16, 24))
    assert mask.shape == (4, 2, 16, 24)
    assert torch.allclose(mask.sum(1), torch.ones(4, 16, 24))
    assert mask.min() >= 0 and mask.max() <= 1


def test_forward_equals_by_hand_computation():
    """Shared q/k conv, value on the partner, scaled softmax over partner positions, nearest x4, sigmoid."""
    block = _randomise(MixBlock(16, reduction=2))
    z, perm = _z(), torch.tensor([2, 0, 3, 1])
    mask = block(z, 0.5, perm, (16, 16))
    wq, bq = block.query.conv.weight, block.query.conv.bias
    wv, bv = block.value.weight, block.value.bias
    i = 1
    j = int(perm[i])
    q = F.conv2d(z[i:i + 1], wq, bq).flatten(2)[0].T  # [hw, 8]
    k = F.conv2d(z[j:j + 1], wq, bq).flatten(2)[0]  # [8, hw]
    v = F.conv2d(z[j:j + 1], wv, bv).flatten(2)[0].T  # [hw, 1]
    attn = torch.softmax(q @ k / math.sqrt(8), dim=-1)
    u = (attn @ v).reshape(1, 1, 4, 4)
    partner = torch.sigmoid(u.repeat_interleave(4, 2).repeat_interleave(4, 3))[0, 0]
    assert torch.allclose(mask[i, 1], partner, atol=1e-6)
    assert torch.allclose(mask[i, 0], 1 - partner, atol=1e-6)


def test_attention_rows_are_distributions_over_partner_positions():
    q, k, v = torch.randn(2, 8, 3, 5), torch.randn(2, 8, 3, 5), torch.randn(2, 1, 3, 5)
    u, attn = attention_mask_logits(q, k, v)
    assert attn.shape == (2, 15, 15)
    assert torch.allclose(attn.sum(-1), torch.ones(2, 15))
    # u is a convex combination of the partner values
    assert (u.flatten(1) <= v.flatten(1).max(1, keepdim=True).values + 1e-6).all()


def test_without_lam_concat_output_ignores_lambda():
    block = _randomise(MixBlock(16))
    z, perm = _z(), torch.tensor([1, 0, 3, 2])
    assert torch.equal(block(z, 0.1, perm, 16), block(z, 0.9, perm, 16))


def test_with_lam_concat_output_depends_on_lambda():
    block = _randomise(MixBlock(16, lam_concat=True))
    assert block.query.conv.in_channels == 17 and block.value.in_channels == 17
    z, perm = _z(), torch.tensor([1, 0, 3, 2])
    assert not torch.allclose(block(z, 0.1, perm, 16), block(z, 0.9, perm, 16))


def test_init_is_small_normal_and_zero_bias():
    block = MixBlock(256)
    w = block.query.conv.weight.detach()
    assert abs(float(w.std()) - 0.01) < 0.002 and float(block.query.conv.bias.detach().abs().max()) == 0
    assert float(block.value.bias.detach().abs().max()) == 0


@pytest.mark.parametrize("norm", ["bn", "ln"])
def test_attention_norm_options(norm):
    block = MixBlock(16, att_norm=norm)
    mask = block(_z(), 0.5, torch.tensor([1, 0, 3, 2]), 8)
    assert mask.shape == (4, 2, 8, 8) and torch.isfinite(mask).all()


def test_bilinear_upsampling_is_smooth_and_nearest_is_blocky():
    block = _randomise(MixBlock(16))
    z, perm = _z(), torch.tensor([1, 0, 3, 2])
    near = block(z, 0.5, perm, 16)
    assert torch.equal(near[:, :, 0::4, 0::4], near[:, :, 1::4, 1::4])  # constant 4x4 blocks
    bili = MixBlock(16, upsample="bilinear")
    bili.load_state_dict(block.state_dict())
    assert not torch.equal(bili(z, 0.5, perm, 16), near)


def test_runs_in_float32_under_bfloat16_autocast():
    block = _randomise(MixBlock(16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mask = block(_z().bfloat16(), 0.5, torch.tensor([1, 0, 3, 2]), 8)
    assert mask.dtype == torch.float32


def test_frozen_block_has_no_trainable_parameters():
    assert not any(p.requires_grad for p in MixBlock(16, frozen=True).parameters())


def test_bad_inputs_give_clear_errors():
    block = MixBlock(16)
    with pytest.raises(ValueError, match="feature stage"):
        block(torch.randn(2, 8, 4, 4), 0.5, torch.tensor([1, 0]), 16)
    with pytest.raises(ValueError, match="smaller than the feature map"):
        block(torch.randn(2, 16, 8, 8), 0.5, torch.tensor([1, 0]), 4)
    with pytest.raises(ValueError, match="upsample"):
        MixBlock(16, upsample="cubic")


# ------------------------------------------------------------------ mask losses
def _mask_with_partner(m1):
    return torch.stack([1 - m1, m1], dim=1)


def test_l1_mask_loss_is_zero_inside_margin_and_linear_outside():
    m1 = torch.full((3, 4, 4), 0.5)  # own area 0.5
    mask = _mask_with_partner(m1)
    assert float(mask_loss(mask, 0.55, "L1", 0.1)) == 0.0
    assert math.isclose(float(mask_loss(mask, 0.8, "L1", 0.1)), 0.2, abs_tol=1e-6)
    assert math.isclose(float(mask_loss(mask, 0.1, "L1", 0.1)), 0.3, abs_tol=1e-6)


def test_l1_mask_loss_uses_the_batch_mean_not_per_sample():
    # sample 0 fully own, sample 1 fully partner: batch-average own area 0.5
    m1 = torch.stack([torch.zeros(4, 4), torch.ones(4, 4)])
    assert float(mask_loss(_mask_with_partner(m1), 0.5, "L1", 0.0)) == 0.0


def test_variance_and_sparsity_modes():
    flat = _mask_with_partner(torch.full((2, 4, 4), 0.5))
    binary = _mask_with_partner(torch.tensor([0.0, 1.0]).repeat(16).reshape(2, 4, 4))
    # the variance term rewards non-flat masks with the same mean
    assert float(mask_loss(binary, 0.5, "L1+Variance", 0.1)) < float(mask_loss(flat, 0.5, "L1+Variance", 0.1))
    # reference: openmixup/models/heads/pmix_block.py, PixelMixBlock.mask_loss uses the population variance
    # (torch.var(..., unbiased=False)): 0.25 for this half-0/half-1 mask (the unbiased one would be 0.2581)
    assert math.isclose(float(mask_loss(binary, 0.5, "L2+Variance", 0.1)), -2 * 0.25, rel_tol=1e-6)
    assert math.isclose(float(mask_loss(binary, 0.5, "L1+Variance", 0.0)), -2 * 0.25, rel_tol=1e-6)
    # sparsity: |m(m-1)| is 0.25 for a flat 0.5 mask and 0 for a binary one
    assert math.isclose(float(mask_loss(flat, 0.5, "Sparsity", 0.1)), 0.15, abs_tol=1e-6)
    assert float(mask_loss(binary, 0.5, "Sparsity", 0.1)) == 0.0


def test_mask_loss_sends_gradient_and_rejects_unknown_mode():
    m1 = torch.full((2, 4, 4), 0.2, requires_grad=True)
    loss = mask_loss(_mask_with_partner(m1), 0.2, "L1", 0.1)  # own area 0.8, λ 0.2 -> outside margin
    loss.backward()
    assert m1.grad is not None and float(m1.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="L1"):
        mask_loss(_mask_with_partner(m1.detach()), 0.5, "L3")
    assert set(MASK_LOSS_MODES) == {"L1", "L1+Variance", "L2+Variance", "Sparsity"}
