"""The ablation options of the step (``StepAblation``, benchmarks/ablations.py, notebook 02c): the default step is
bitwise the unablated one, and each option changes what it says and nothing else."""
import copy
import sys
from pathlib import Path

import pytest
import torch

from automix_lite.core.automix import AutoMix, StepAblation, mask_mix, mixed_ce
from automix_lite.fast.step import training_step as fast_training_step

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import ablations  # noqa: E402

KEYS = ("loss", "loss_one_q", "loss_mix_q", "loss_mix_k", "loss_mask", "mask_mb", "mask_bb", "lam_mb", "lam_bb")


def _batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 5, (n,), generator=g)


def _model(**kw):
    torch.manual_seed(0)
    return AutoMix("resnet_tiny_cifar", 5, feature_stage=2, att_norm="bn", **kw)


def _step(model, seed, ablation="none", x_seed=0):
    x, y = _batch(seed=x_seed)
    g = torch.Generator().manual_seed(seed)
    if ablation == "none":
        return model.training_step(x, y, 0, 10, generator=g)
    return model.training_step(x, y, 0, 10, generator=g, ablation=ablation)


def _grad_norm(loss, params):
    gs = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return sum(0.0 if g is None else float(g.abs().sum()) for g in gs)


@pytest.mark.parametrize("margin", [0.08, 0.45])  # 0.45: the fallback on almost every step
def test_default_ablation_is_the_unablated_step_bitwise(margin):
    """No ablation, ``StepAblation()`` and the device step (``fast.step``, which knows no ablation) give the same
    losses, masks, λs and, after three SGD + EMA steps, the same parameters and buffers, bit for bit."""
    base = _model(lam_margin=margin)
    models = {"none": base, "default": copy.deepcopy(base), "fast": copy.deepcopy(base)}
    for step in range(3):
        outs = {}
        for name, m in models.items():
            x, y = _batch(seed=step)
            g = torch.Generator().manual_seed(step)
            outs[name] = (fast_training_step(m, x, y, step, 10, generator=g, online_pass="separate")
                          if name == "fast" else _step(m, step, "none" if name == "none" else StepAblation(), step))
        for key in KEYS:
            assert torch.equal(outs["none"][key], outs["default"][key]), key
            assert torch.equal(outs["none"][key], outs["fast"][key]), key
        for name, m in models.items():
            params = m.online_parameters() + m.mix_block_parameters()
            grads = torch.autograd.grad(outs[name]["loss"], params, allow_unused=True)
            with torch.no_grad():
                for p, gr in zip(params, grads):
                    if gr is not None:
                        p.add_(gr, alpha=-0.1)
            m.momentum_update(step, 10)
    states = [m.state_dict() for m in models.values()]
    assert all(torch.equal(states[0][k], s[k]) for s in states[1:] for k in states[0])


def _unfallen_seed(model, want=lambda out: True):
    for s in range(100):
        out = _step(model, s)
        if not bool(out["fallback"]) and want(out):
            return s
    raise AssertionError("no seed without the fallback")


def test_mask_bb_attached_sends_the_backbone_loss_into_the_mix_block():
    model = _model()
    seed = _unfallen_seed(model)
    block = model.mix_block_parameters()
    assert _grad_norm(_step(model, seed)["loss_mix_q"], block) == 0.0  # default: M_bb detached
    attached = _step(model, seed, StepAblation(detach_mask_bb=False))
    assert _grad_norm(attached["loss_mix_q"], block) > 0.0
    assert torch.equal(attached["loss_mix_q"], _step(model, seed)["loss_mix_q"])  # same value, only the graph


def test_shared_lam_uses_lam_mb_for_both_draws_and_keeps_the_stream():
    model = _model()
    seed = _unfallen_seed(model, lambda out: abs(float(out["lam_mb"] - out["lam_bb"])) > 0.05)
    plain, shared = _step(model, seed), _step(model, seed, StepAblation(shared_lam=True))
    assert float(plain["lam_bb"]) != float(plain["lam_mb"])
    assert float(shared["lam_bb"]) == float(shared["lam_mb"]) == float(plain["lam_mb"])
    assert torch.equal(shared["perm_bb"], plain["perm_bb"]) and torch.equal(shared["mask_mb"], plain["mask_mb"])
    assert not torch.equal(shared["loss_mix_q"], plain["loss_mix_q"])
    # the fallback follows the shared λ: λ_mb near 0 or 1 now switches the backbone to MixUp
    margin_model = _model(lam_margin=0.45)
    for s in range(100):
        d = margin_model.draw(6, torch.Generator().manual_seed(s), shared_lam=True)
        assert d.fallback == (min(d.lam_mb, 1 - d.lam_mb) <= 0.45)


def test_online_judge_computes_the_mix_block_loss_with_the_online_network():
    model = _model()
    with torch.no_grad():  # the online network moves away from its momentum copy (else both judge alike)
        model.head_mix_q.fc.weight.add_(0.5 * torch.randn_like(model.head_mix_q.fc.weight))
    seed = _unfallen_seed(model)
    online = model.online_parameters()
    plain = _step(model, seed)
    assert _grad_norm(plain["loss_mix_k"], online) == 0.0  # default: the frozen momentum network judges
    judged = _step(model, seed, StepAblation(judge="online"))
    assert _grad_norm(judged["loss_mix_k"], online) > 0.0
    assert _grad_norm(judged["loss_mix_k"], model.mix_block_parameters()) > 0.0
    x, y = _batch()
    lam = float(judged["lam_mb"])
    with torch.no_grad():
        model.backbone_q.train()
        want = mixed_ce(model.head_mix_q(model.backbone_q(mask_mix(x, judged["mask_mb"], judged["perm_mb"]))),
                        y, judged["perm_mb"], lam, 1 - lam)
    assert torch.allclose(judged["loss_mix_k"], want, rtol=1e-5)
    assert not torch.allclose(plain["loss_mix_k"], want, rtol=1e-3)


def test_bad_judge_is_refused():
    with pytest.raises(ValueError, match="judge must be"):
        StepAblation(judge="target")


def test_each_study_variant_changes_one_factor():
    base = ablations.config("baseline", 0, 2, quick=True).to_dict()
    for name, (overrides, ablation, _) in ablations.VARIANTS.items():
        cfg = ablations.config(name, 0, 2, quick=True).to_dict()
        changed = {k for k in cfg if cfg[k] != base[k]}
        fields = {f for f in ("detach_mask_bb", "shared_lam", "judge")
                  if ablation is not None and getattr(ablation, f) != getattr(StepAblation(), f)}
        assert len(changed) + len(fields) == (0 if name == "baseline" else 1), (name, changed, fields)
        assert changed == set(overrides)


def test_mask_stats_measure_structure_and_the_area_gap():
    rows = [(lam, 0.2 + 0.5 * lam, 0.1) for lam in (0.2, 0.4, 0.6, 0.8)]
    s = ablations.mask_stats(rows)
    assert s["area_slope"] == pytest.approx(0.5) and s["mask_std"] == pytest.approx(0.1)
    assert s["area_gap"] == pytest.approx(sum(abs(0.2 - 0.5 * lam) for lam in (0.2, 0.4, 0.6, 0.8)) / 4)
    recs = [{"variant": "baseline", "seed": i, **s, "top1_one_k": 90.0 + i, "top1_best": 91.0} for i in range(3)]
    summary = ablations.summarize(recs)
    assert summary["baseline"]["n"] == 3 and summary["baseline"]["top1_one_k"]["std"] == pytest.approx(1.0)


def test_notebook_02c_quotes_the_results_file():
    """Every number the reading of notebook 02c quotes (`variant` metric **mean ± std**) is the study's."""
    import json
    import re

    root = Path(__file__).resolve().parents[1]
    nb = json.loads((root / "notebooks" / "02c_ablations.ipynb").read_text())
    text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    quotes = re.findall(r"`(\w+)` (\w+) \*\*(-?\d+\.(\d+)) ± (\d+\.\d+)\*\*", text)
    assert len(quotes) >= 6 and "RESULTS_READING" not in text
    summary = json.loads((root / "benchmarks" / "results" / "ablations.json").read_text())["summary"]
    for variant, metric, mean, decimals, std in quotes:
        s = summary[variant][metric]
        assert (f"{s['mean']:.{len(decimals)}f}", f"{s['std']:.{len(decimals)}f}") == (mean, std), (variant, metric)
