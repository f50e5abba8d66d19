"""Tests aimed at the mutants that survived the suite (issue 23): each fails if its mutant is applied.

* ``online_pass="auto"`` must pick the separate passes off CUDA (a mutant picked the fused pass on the CPU);
* the ensemble head is the mean of the *squared* logits of the four heads (a mutant averaged raw logits);
* ``att_norm`` is applied after the Mix Block's query/key conv (a mutant skipped it).
"""
import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import automix_lite.fast.step as fast_step
from automix_lite import AutoMix, MixBlock

ROOT = Path(__file__).resolve().parents[1]


def test_auto_online_pass_is_separate_on_the_cpu(monkeypatch):
    model = AutoMix("resnet_tiny_cifar", num_classes=4)
    calls = []
    real = fast_step.per_part_batchnorm
    monkeypatch.setattr(fast_step, "per_part_batchnorm", lambda *a, **k: calls.append(1) or real(*a, **k))
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 4, (4,))
    fast_step.training_step(model, x, y, generator=torch.Generator().manual_seed(0), online_pass="auto")
    assert calls == []  # auto on the CPU: two plain passes
    assert not fast_step.uses_fused("auto", torch.device("cpu")) and fast_step.uses_fused("auto", torch.device("cuda"))
    fast_step.training_step(model, x, y, generator=torch.Generator().manual_seed(0), online_pass="fused")
    assert calls == [1]  # the explicit request is honoured everywhere


def test_ensemble_is_the_mean_of_squared_logits():
    torch.manual_seed(0)
    model = AutoMix("resnet_tiny_cifar", num_classes=4).eval()
    for p in model.parameters():
        p.data.add_(torch.randn_like(p) * 0.05)  # four different heads
    x = torch.randn(3, 3, 16, 16)
    outs = model.forward_all(x)
    want = torch.stack([o.pow(2) for o in outs.values()]).mean(0)
    got = model(x, head="ensemble")
    torch.testing.assert_close(got, want)
    assert not torch.allclose(got, torch.stack(list(outs.values())).mean(0))  # not the raw-logit mean
    model.head_ensemble = True
    torch.testing.assert_close(model(x), want)  # head=None follows head_ensemble


@pytest.mark.parametrize("att_norm, norm_type", [("bn", nn.BatchNorm2d), ("ln", nn.LayerNorm)])
def test_att_norm_is_applied_to_queries_and_keys(att_norm, norm_type):
    torch.manual_seed(0)
    block = MixBlock(8, att_norm=att_norm).eval()
    assert isinstance(block.query.norm, norm_type)
    z, perm = torch.randn(2, 8, 4, 4), torch.tensor([1, 0])
    before = block.attention(z, 0.5, perm)
    q_raw = block.query.conv(z)
    with torch.no_grad():
        block.query.norm.weight.mul_(3.0)  # the norm's affine weight must reach q, k and the attention
    after = block.attention(z, 0.5, perm)
    torch.testing.assert_close(after["q"], block.query.norm(q_raw))
    assert not torch.allclose(after["attn"], before["attn"])
    plain = MixBlock(8, att_norm=None)
    assert isinstance(plain.query.norm, nn.Identity)


def _script():
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("bench_mutants", ROOT / "benchmarks" / "mutants.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclass looks the module up
    spec.loader.exec_module(mod)
    return mod


def test_every_named_mutant_still_applies_once():
    """benchmarks/mutants.py would report "NOT APPLIED" after a refactor moved the code it mutates."""
    mod = _script()
    counts = {m.name: (ROOT / "automix_lite" / m.path).read_text().count(m.old) for m in mod.MUTANTS}
    assert counts and all(n == 1 for n in counts.values()), counts
    missing = [t for m in mod.MUTANTS for t in m.tests if not (ROOT / t.split("::")[0]).is_file()]
    assert not missing, missing


def test_the_copy_is_a_working_clone():
    """The script once copied only automix_lite/ and tests/: conftest.py, benchmarks/ and the notebooks were
    missing, the test above failed in every copy and the control run failed (exit 2). Here the control of one test
    file runs in a fresh copy and must pass."""
    mod = _script()
    control = mod.run_mutant(mod.Mutant("control", "core/automix.py", "", "", (mod.APPLIES_ONCE,)), timeout=300)
    assert control["result"] == "SURVIVED", control  # survived = the tests passed on the unchanged copy


@pytest.mark.slow  # the control and 11 mutants, each a run of its test files in a fresh copy
def test_the_script_passes_its_control_and_kills_every_mutant(tmp_path):
    """What `python benchmarks/mutants.py` promises, from a clean copy of the repository: the control passes (exit
    2 otherwise) and every named mutant is killed by its tests (exit 1 otherwise)."""
    mod = _script()
    out = tmp_path / "mutants.json"
    assert mod.main(["--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert [r["mutant"] for r in record["mutants"]] == [m.name for m in mod.MUTANTS]
    assert all(r["result"].startswith("killed") for r in record["mutants"]), record["mutants"]
