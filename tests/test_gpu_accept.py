"""benchmarks/gpu_accept.py (issue 29): its budget, its partial results, and that each check it runs on the CPU
can fail (a broken component injected, the check run alone with ``--only`` in a dry run)."""
import contextlib
import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
accept = pytest.importorskip("gpu_accept")
checks = sys.modules["gpu_accept_checks"]


def _dry(tmp_path, *extra):
    code = accept.main(["--dry-run", "--out", str(tmp_path), *extra])
    doc = json.loads((tmp_path / "gpu_accept_dryrun_cpu.json").read_text())
    return code, doc


def test_a_spent_budget_skips_checks_and_still_writes_the_verdicts(tmp_path):
    code, doc = _dry(tmp_path, "--budget", "0.5")
    res = doc["results"]
    assert code == 0 and set(res) == set(accept.CHECKS) and doc["complete"]
    assert res["amp_policy"]["status"] == "PASS"  # 0.25 s estimate in a dry run: it fits
    assert all(res[k]["status"] == "SKIP" and "budget" in res[k]["why"] for k in ("fp32_equality", "train_e2e"))
    prov = doc["provenance"]
    assert prov["budget_s"] == 0.5 and "commit" in prov["git"] and prov["versions"]["torch"] == torch.__version__


def test_results_are_written_after_every_check(tmp_path, monkeypatch):
    seen = []

    def second(args, dev, budget):  # runs after amp_policy: its verdict must already be on disk
        seen.append(json.loads((tmp_path / "gpu_accept_dryrun_cpu.json").read_text()))
        raise KeyboardInterrupt  # the call is killed here
    monkeypatch.setitem(accept.CHECKS, "fp32_equality", second)
    with pytest.raises(KeyboardInterrupt):
        accept.main(["--dry-run", "--out", str(tmp_path), "--only", "amp_policy", "fp32_equality"])
    assert seen[0]["results"]["amp_policy"]["status"] == "PASS" and not seen[0]["complete"]
    assert "Incomplete" in (tmp_path / "gpu_accept_dryrun_cpu.md").read_text()


def test_the_gpu_name_becomes_the_file_name(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda dev=None: "NVIDIA H100 80GB HBM3")
    assert accept.gpu_slug(torch.device("cuda", 0), False) == "h100_80gb_hbm3"
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda dev=None: "Tesla T4")
    assert accept.gpu_slug(torch.device("cuda", 0), False) == "t4"


def _broken_amp(monkeypatch):
    monkeypatch.setattr(checks, "resolve_amp", lambda amp, dev: torch.bfloat16)


def _broken_split(monkeypatch):  # the fused pass pools BatchNorm's statistics
    import automix_lite.fast.step as fast_step

    real = fast_step.per_part_batchnorm
    monkeypatch.setattr(fast_step, "per_part_batchnorm", lambda *a, **k: contextlib.nullcontext())
    monkeypatch.setattr(checks.fast_step, "per_part_batchnorm", lambda *a, **k: contextlib.nullcontext())
    return real


def _short_loader(monkeypatch):
    from automix_lite.fast import device_data as dd

    real = dd.DeviceLoader.__len__
    monkeypatch.setattr(dd.DeviceLoader, "__len__", lambda self: real(self) - 1)


def _frozen_graph(monkeypatch):
    from automix_lite.fast.graphed import GraphedStep

    monkeypatch.setattr(GraphedStep, "_body", lambda self, train_mb=True: {"loss": torch.zeros(())})


def _silent_fallback(monkeypatch):
    import automix_lite.trainer.fastpaths as fastpaths

    monkeypatch.setattr(fastpaths, "fallback_warning", lambda *a, **k: None)


def _failing_path(monkeypatch):
    monkeypatch.setattr(checks, "time_path", lambda *a, **k: {"na": "error: RuntimeError: injected"})


def _no_device_data(monkeypatch):  # data_on_device=True quietly off: the path e2e claims to test did not run
    import automix_lite.trainer.data as data_mod

    real = data_mod._device_loaders
    monkeypatch.setattr(data_mod, "_device_loaders", lambda cfg, *a, **k: (None, "off: injected")
                        if cfg.data_on_device is True else real(cfg, *a, **k))


@pytest.mark.parametrize("check, inject", [("train_e2e", _no_device_data), ("amp_policy", _broken_amp), ("fp32_equality", _broken_split),
                                           ("no_host_sync", _short_loader), ("no_host_sync", _frozen_graph),
                                           ("fallback", _silent_fallback), ("speed_memory", _failing_path)])
def test_each_check_fails_on_what_it_guards(tmp_path, monkeypatch, check, inject):
    inject(monkeypatch)
    code, doc = _dry(tmp_path, "--only", check)
    assert code == 1 and doc["results"][check]["status"] == "FAIL", doc["results"][check]
