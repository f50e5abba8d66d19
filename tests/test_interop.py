"""OpenMixup checkpoint interoperability: layout recognition, exact round trips, clear errors."""
import argparse
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from timm.models.resnet import BasicBlock, ResNet

from automix_lite.core.automix import AutoMix
from automix_lite.core.models import create_backbone, feature_map
from automix_lite.interop import CheckpointMismatchError, from_openmixup, infer_backbone, to_openmixup

DOC = Path(__file__).resolve().parents[1] / "docs/checkpoints.md"


# ----------------------------------------------------------------------------- the documented layout
def _bn(prefix, c):
    return [(f"{prefix}.{p}", (c,)) for p in ("weight", "bias", "running_mean", "running_var")] + \
        [(f"{prefix}.num_batches_tracked", ())]


def resnet18_cifar_layout(num_classes=100):
    """(key, shape) of OpenMixup's CIFAR ResNet-18 AutoMix, in the order of the doc's key list (q-side only)."""
    keys = [("mix_block.value.weight", (1, 256, 1, 1)), ("mix_block.value.bias", (1,)),
            ("mix_block.query.conv.weight", (128, 256, 1, 1)), ("mix_block.query.conv.bias", (128,))]
    bb = [("conv1.weight", (64, 3, 3, 3))] + _bn("bn1", 64)
    cin = 64
    for i, c in enumerate((64, 128, 256, 512), start=1):
        for j in range(2):
            p = f"layer{i}.{j}"
            bb += [(f"{p}.conv1.weight", (c, cin if j == 0 else c, 3, 3))] + _bn(f"{p}.bn1", c)
            bb += [(f"{p}.conv2.weight", (c, c, 3, 3))] + _bn(f"{p}.bn2", c)
            if j == 0 and i > 1:
                bb += [(f"{p}.downsample.0.weight", (c, cin, 1, 1))] + _bn(f"{p}.downsample.1", c)
        cin = c
    keys += [(f"backbone_q.{k}", s) for k, s in bb]
    for h in ("head_mix_q", "head_mix_k", "head_one_q", "head_one_k"):
        keys += [(f"{h}.fc.weight", (num_classes, 512)), (f"{h}.fc.bias", (num_classes,))]
    return keys


def full_layout(num_classes=100):
    """Every key of the checkpoint: the listed ones, backbone_k repeating backbone_q, and the aliases."""
    listed = resnet18_cifar_layout(num_classes)
    bq = [(k[len("backbone_q."):], s) for k, s in listed if k.startswith("backbone_q.")]
    head_one_k = [(k[len("head_one_k."):], s) for k, s in listed if k.startswith("head_one_k.")]
    return (listed + [(f"backbone_k.{k}", s) for k, s in bq] + [(f"backbone.{k}", s) for k, s in bq]
            + [(f"head.{k}", s) for k, s in head_one_k])


def random_state_dict(layout, seed=0):
    """Random but well-scaled values; the aliases get the very tensors of backbone_k / head_one_k."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in layout:
        if key.startswith(("backbone.", "head.")):
            continue
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.randint(0, 1000, (), generator=g)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith(("running_mean", "bias")):
            sd[key] = torch.randn(shape, generator=g) * 0.1
        elif len(shape) == 1:  # BN weight
            sd[key] = 1 + 0.1 * torch.randn(shape, generator=g)
        else:  # conv / linear weight, He-scaled; a small value conv keeps the sigmoid off saturation
            fan_in = math.prod(shape[1:])
            sd[key] = torch.randn(shape, generator=g) * (math.sqrt(2 / fan_in) * (0.1 if "value" in key else 1))
    for key, _ in layout:
        if key.startswith("backbone."):
            sd[key] = sd["backbone_k." + key[len("backbone."):]]
        elif key.startswith("head."):
            sd[key] = sd["head_one_k." + key[len("head."):]]
    return {k: sd[k] for k, _ in layout}


@pytest.fixture(scope="module")
def sd():
    return random_state_dict(full_layout())


@pytest.fixture(scope="module")
def model(sd):
    return from_openmixup(sd).eval()


def _assert_same(a: dict, b: dict):
    assert list(sorted(a)) == list(sorted(b))
    for k in a:
        assert a[k].shape == b[k].shape and a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k


# ----------------------------------------------------------------------------- layout and loading
def test_generator_matches_the_documented_key_list():
    block = re.search(r"## Key layout\n.*?```\n(.*?)```", DOC.read_text(), re.S).group(1)
    doc = []
    for line in block.strip().splitlines():
        key, shape = line.split(" ", 1)
        doc.append((key, tuple(int(s) for s in re.findall(r"\d+", shape))))
    assert doc == resnet18_cifar_layout()
    counts = {}
    for k, _ in full_layout():
        counts[k.split(".")[0]] = counts.get(k.split(".")[0], 0) + 1
    assert counts == {"backbone_q": 120, "backbone_k": 120, "head_one_q": 2, "head_mix_q": 2, "head_one_k": 2,
                      "head_mix_k": 2, "mix_block": 4, "backbone": 120, "head": 2}


def test_architecture_is_recognised(model):
    assert model.backbone_name == "resnet18_cifar"
    assert model.num_classes == 100 and model.feature_stage == 3
    assert model.mix_block.in_channels == 256 and model.mix_block.reduction == 2
    assert not model.mix_block.lam_concat


def test_tensors_land_in_the_right_modules(model, sd):
    pairs = {
        model.backbone_q.conv1.weight: "backbone_q.conv1.weight",
        model.backbone_k.layer3[0].downsample[1].running_var: "backbone_k.layer3.0.downsample.1.running_var",
        model.backbone_q.layer4[1].bn2.num_batches_tracked: "backbone_q.layer4.1.bn2.num_batches_tracked",
        model.head_mix_k.fc.weight: "head_mix_k.fc.weight",
        model.head_one_q.fc.bias: "head_one_q.fc.bias",
        model.mix_block.query.conv.weight: "mix_block.query.conv.weight",
        model.mix_block.value.bias: "mix_block.value.bias",
    }
    for tensor, key in pairs.items():
        assert torch.equal(tensor, sd[key]), key
    # q and k were drawn independently, so the two encoders must differ
    assert not torch.equal(model.backbone_q.conv1.weight, model.backbone_k.conv1.weight)


def test_round_trip_is_exact_including_aliases(model, sd):
    out = to_openmixup(model)
    _assert_same(out, sd)
    assert out["backbone.conv1.weight"] is out["backbone_k.conv1.weight"]  # the same tensor, stored twice
    assert out["head.fc.weight"] is out["head_one_k.fc.weight"]


def test_loads_from_path_and_mmcv_dict(sd, tmp_path):
    ckpt = {"meta": {"epoch": 800, "mmcv_version": "1.4.7"}, "state_dict": sd, "optimizer": {}}
    path = tmp_path / "epoch_800.pth"
    torch.save(ckpt, path)
    for source in (ckpt, path, str(path)):
        _assert_same(to_openmixup(from_openmixup(source)), sd)
    _assert_same(to_openmixup(from_openmixup({"module." + k: v for k, v in sd.items()})), sd)  # DDP prefix


def test_untrusted_pickle_needs_explicit_opt_in(sd, tmp_path):
    path = tmp_path / "with_object.pth"
    torch.save({"meta": {"cfg": argparse.Namespace(lr=0.1)}, "state_dict": sd}, path)
    with pytest.raises(ValueError, match="weights_only=False"):
        from_openmixup(path)
    _assert_same(to_openmixup(from_openmixup(path, weights_only=False)), sd)


def test_num_classes_from_heads_and_extra_options():
    sd = random_state_dict(full_layout(num_classes=10), seed=3)
    m = from_openmixup(sd, alpha=1.0, momentum=0.99)
    assert m.num_classes == 10 and m.alpha == 1.0 and m.momentum == 0.99


# ----------------------------------------------------------------------------- errors
def test_missing_extra_and_misshaped_keys_are_all_listed(sd):
    bad = dict(sd)
    del bad["backbone_q.layer2.1.bn1.running_mean"]
    bad["mix_block.foo.weight"] = torch.zeros(3)
    bad["head_mix_q.fc.bias"] = torch.zeros(7)
    with pytest.raises(CheckpointMismatchError) as info:
        from_openmixup(bad)
    err, msg = info.value, str(info.value)
    assert isinstance(err, ValueError)
    assert err.missing == ["backbone_q.layer2.1.bn1.running_mean"]
    assert err.unexpected == ["mix_block.foo.weight"]
    assert err.mismatched == [("head_mix_q.fc.bias", (7,), (100,))]
    for key in ("backbone_q.layer2.1.bn1.running_mean", "mix_block.foo.weight", "head_mix_q.fc.bias"):
        assert key in msg


@pytest.mark.parametrize("edit", ["missing", "extra", "shape"])
def test_each_problem_alone_names_the_key(sd, edit):
    bad = dict(sd)
    if edit == "missing":
        key = "backbone_k.layer1.0.conv2.weight"
        del bad[key]
    elif edit == "extra":
        key = "backbone_q.fc.weight"
        bad[key] = torch.zeros(100, 512)
    else:
        key = "backbone_k.layer4.1.bn1.weight"
        bad[key] = torch.zeros(511)
    with pytest.raises(CheckpointMismatchError, match=re.escape(key)):
        from_openmixup(bad)


def test_non_strict_loads_the_rest_but_never_wrong_shapes(sd):
    bad = dict(sd)
    del bad["head_mix_k.fc.bias"]
    bad["extra.thing"] = torch.ones(2)
    with pytest.warns(UserWarning, match="head_mix_k.fc.bias"):
        m = from_openmixup(bad, strict=False)
    assert torch.equal(m.head_mix_k.fc.weight, sd["head_mix_k.fc.weight"])
    bad["head_one_k.fc.weight"] = torch.zeros(100, 3)
    with pytest.raises(CheckpointMismatchError, match="head_one_k.fc.weight"):
        from_openmixup(bad, strict=False)


def test_num_classes_disagreeing_with_heads_is_an_error(sd):
    with pytest.raises(CheckpointMismatchError, match="head_one_k.fc.weight"):
        from_openmixup(sd, num_classes=10)


def test_differing_alias_warns_and_is_ignored(sd):
    bad = dict(sd)
    bad["backbone.bn1.weight"] = sd["backbone.bn1.weight"] + 1
    with pytest.warns(UserWarning, match=r"backbone\.bn1\.weight"):
        m = from_openmixup(bad)
    assert torch.equal(m.backbone_k.bn1.weight, sd["backbone_k.bn1.weight"])


def test_unrecognised_inputs_give_clear_errors(sd):
    with pytest.raises(CheckpointMismatchError, match="backbone_q"):
        from_openmixup({"encoder.weight": torch.zeros(1)})
    bad = dict(sd)
    bad["backbone_q.conv1.weight"] = torch.zeros(64, 3, 5, 5)
    with pytest.raises(ValueError, match="3x3 .CIFAR. or 7x7"):
        from_openmixup(bad)
    bad = {k: v for k, v in sd.items() if not k.startswith("mix_block")}
    with pytest.raises(CheckpointMismatchError, match="Mix Block"):
        from_openmixup(bad)
    with pytest.raises(TypeError, match="path"):
        from_openmixup(42)
    with pytest.raises(FileNotFoundError):
        from_openmixup("/nonexistent/epoch_1.pth")


# ----------------------------------------------------------------------------- the loaded model works
def test_forward_every_head_and_generate_mask(model):
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for head in ("one_k", "mix_k", "one_q", "mix_q", "ensemble"):
            out = model(x, head=head)
            assert out.shape == (3, 100) and torch.isfinite(out).all()
        assert not torch.allclose(model(x, head="one_k"), model(x, head="one_q"))
    mask = model.generate_mask(x, 0.4, torch.tensor([2, 0, 1]))
    assert mask.shape == (3, 2, 32, 32) and torch.allclose(mask.sum(1), torch.ones(3, 32, 32))


def test_mask_equals_hand_computation_from_the_checkpoint(model, sd):
    g = torch.Generator().manual_seed(2)
    x, perm, i = torch.randn(4, 3, 32, 32, generator=g), torch.tensor([3, 2, 0, 1]), 1
    mask = model.generate_mask(x, 0.3, perm)  # [N, 2, H, W]
    # the tap: a separately built CIFAR ResNet-18 with the checkpoint's momentum weights, layer3
    ref = create_backbone("resnet18_cifar")
    ref.load_state_dict({k[len("backbone_k."):]: v for k, v in sd.items() if k.startswith("backbone_k.")})
    with torch.no_grad():
        z = feature_map(ref.eval(), x, 3)  # [N, 256, 8, 8]
    assert z.shape == (4, 256, 8, 8)
    wq, bq = sd["mix_block.query.conv.weight"], sd["mix_block.query.conv.bias"]
    wv, bv = sd["mix_block.value.weight"], sd["mix_block.value.bias"]
    q = F.conv2d(z[i:i + 1], wq, bq).flatten(2)[0]  # [128, 64], the same conv gives query ...
    k = F.conv2d(z[perm[i]:perm[i] + 1], wq, bq).flatten(2)[0]  # ... and the partner's key
    v = F.conv2d(z[perm[i]:perm[i] + 1], wv, bv).flatten(2)[0]  # [1, 64], value of the partner
    attn = torch.softmax(q.T @ k / math.sqrt(128), dim=-1)  # [64, 64], over the partner's positions
    u = (attn @ v.T).reshape(8, 8)
    up = u.repeat_interleave(4, 0).repeat_interleave(4, 1)  # nearest, 8 -> 32
    partner = torch.sigmoid(up)
    assert partner.std() > 1e-2 and 0.01 < partner.mean() < 0.99  # a non-trivial mask
    torch.testing.assert_close(mask[i, 1], partner, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(mask[i, 0], 1 - partner, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- other layouts
def _perturb(sd, seed=5):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in sd.items():
        if k.startswith(("backbone.", "head.")):
            continue
        out[k] = v + 0.01 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v + 7
    for k in sd:
        if k.startswith("backbone."):
            out[k] = out["backbone_k." + k[len("backbone."):]]
        elif k.startswith("head."):
            out[k] = out["head_one_k." + k[len("head."):]]
    return out


@pytest.mark.parametrize("name,card", [("resnet50_cifar", 1), ("resnext50_cifar", 32)])
def test_bottleneck_cifar_layouts_are_recognised(name, card):
    ours = AutoMix(name, 10)
    sd = _perturb(to_openmixup(ours))
    assert sd["mix_block.query.conv.weight"].shape == (512, 1024, 1, 1)
    spec = infer_backbone({k[len("backbone_q."):]: v for k, v in sd.items() if k.startswith("backbone_q.")})
    assert spec.block == "bottleneck" and spec.layers == (3, 4, 6, 3) and spec.cardinality == card
    assert spec.base_width == (4 if card == 32 else 64)
    m = from_openmixup(sd)
    assert m.backbone_name == name and m.feature_stage == 3 and m.mix_block.in_channels == 1024
    _assert_same(to_openmixup(m), sd)


def test_lam_concat_and_imagenet_stem_are_detected():
    ours = AutoMix("resnet18", 5, lam_concat=True)
    sd = _perturb(to_openmixup(ours))
    assert sd["mix_block.query.conv.weight"].shape == (128, 257, 1, 1)
    assert sd["backbone_q.conv1.weight"].shape[-1] == 7
    m = from_openmixup(sd)
    assert m.backbone_name == "resnet18" and m.mix_block.lam_concat and m.mix_block.in_channels == 256
    assert m.feature_stage == 3
    _assert_same(to_openmixup(m), sd)
    x = torch.randn(2, 3, 64, 64)
    a, b = m.eval().generate_mask(x, 0.2, torch.tensor([1, 0])), m.generate_mask(x, 0.8, torch.tensor([1, 0]))
    assert not torch.allclose(a, b)  # with λ concatenation the mask depends on λ


def test_unnamed_resnet_is_built_with_matching_shapes():
    backbone = ResNet(BasicBlock, (1, 2, 1, 1), channels=(32, 64, 128, 256), num_classes=0)
    sd = _perturb(to_openmixup(AutoMix(backbone, 4)))
    m = from_openmixup(sd)
    assert isinstance(m.backbone_q, ResNet) and len(m.backbone_q.layer2) == 2
    assert m.backbone_q.conv1.kernel_size == (7, 7)
    assert m.mix_block.in_channels == 128 and m.feature_stage == 3
    _assert_same(to_openmixup(m), sd)


def test_att_norm_bn_and_legacy_query_layouts():
    ours = AutoMix("resnet_tiny_cifar", 3, att_norm="bn")
    with torch.no_grad():
        ours.mix_block.query.conv.bias.normal_()  # folded into the BN running mean on export
        ours.mix_block.query.norm.running_mean.normal_()
        ours.mix_block.query.norm.running_var.uniform_(0.5, 1.5)
    sd = to_openmixup(ours)
    assert "mix_block.query.conv.bias" not in sd and "mix_block.query.bn.running_var" in sd
    m = from_openmixup(sd)
    assert isinstance(m.mix_block.query.norm, torch.nn.BatchNorm2d)
    x, perm = torch.randn(4, 3, 32, 32), torch.tensor([1, 2, 3, 0])
    torch.testing.assert_close(m.eval().generate_mask(x, 0.5, perm), ours.eval().generate_mask(x, 0.5, perm))
    _assert_same(to_openmixup(m), sd)
    # early OpenMixup: the query was a plain nn.Conv2d ("mix_block.query.weight")
    plain = to_openmixup(AutoMix("resnet_tiny_cifar", 3))
    legacy = {k.replace("query.conv.", "query."): v for k, v in plain.items()}
    m = from_openmixup(legacy)
    assert torch.equal(m.mix_block.query.conv.weight, plain["mix_block.query.conv.weight"])
    _assert_same(to_openmixup(m), plain)


def test_feature_stage_follows_the_mix_block_width():
    sd = to_openmixup(AutoMix("resnet_tiny_cifar", 3, feature_stage=2))  # stages: 64 | 16, 32, 64, 128
    assert sd["mix_block.value.weight"].shape[1] == 32
    m = from_openmixup(sd)
    assert m.feature_stage == 2 and m.mix_block.in_channels == 32
    with pytest.raises(ValueError, match="match no stage"):
        from_openmixup(sd, feature_stage=4)
