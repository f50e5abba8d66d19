"""Smoke tests of the benchmark harnesses: each runs with tiny settings into tmp_path and writes the
documented JSON schema (provenance, settings, per-method results)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod  # dataclasses look their module up in sys.modules
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(BENCH))


def _check_provenance(prov: dict) -> None:
    for key in ("date_utc", "command", "seed", "hardware", "versions"):
        assert key in prov, key
    assert prov["hardware"]["cpu_model"]
    assert prov["hardware"]["torch_threads"] >= 1
    for lib in ("torch", "timm", "torchvision", "automix_lite", "python"):
        assert prov["versions"][lib]


def _check_speed(res: dict, methods: list[str]) -> None:
    _check_provenance(res["provenance"])
    assert set(res["targets"]) == {"mixer_max_ratio", "automix_max_ratio"}
    (stats,) = res["results"].values()
    assert list(stats) == methods
    assert stats["vanilla"]["ratio"] == pytest.approx(1.0)
    for name, s in stats.items():
        assert s["n"] == 2 and len(s["times_ms"]) == 2
        assert s["q1_ms"] <= s["median_ms"] <= s["q3_ms"] or s["n"] < 3
        assert s["median_ms"] > 0 and s["ratio"] > 0
        assert 0 <= s["mix_ms"] < s["median_ms"]  # the mixing call is part of the step
        assert s["mix_overhead_ratio"] >= 1.0
    assert stats["vanilla"]["mix_ms"] == 0.0


def test_speed_smoke(tmp_path):
    speed = _load("speed")
    methods = ["vanilla", "mixup", "cutmix", "manifoldmix", "automix"] + speed.peers_available()[:1]
    res = speed.main(["--quick", "--steps", "2", "--methods", *methods, "--out", str(tmp_path)])
    _check_speed(res, methods)
    on_disk = json.loads((tmp_path / "speed_cpu.json").read_text())
    assert on_disk["results"].keys() == res["results"].keys()
    md = (tmp_path / "speed_cpu.md").read_text()
    assert "| automix |" in md and "Command:" in md


def test_speed_rejects_unknown_method(tmp_path):
    speed = _load("speed")
    with pytest.raises(SystemExit, match="unknown method"):
        speed.main(["--quick", "--steps", "2", "--methods", "nomix", "--out", str(tmp_path)])


def test_step_time_smoke(tmp_path):
    step_time = _load("step_time")
    res = step_time.main(["--quick", "--steps", "2", "--out", str(tmp_path)])
    _check_speed(res, ["vanilla", "mixup", "automix"])
    assert (tmp_path / "step_time_cpu.json").exists()


def test_accuracy_smoke(tmp_path):
    accuracy = _load("accuracy")
    args = ["--quick", "--suite", "digits", "cifar10", "--methods", "vanilla", "mixup", "--seeds", "0", "1",
            "--cifar-seeds", "0", "--archive", str(tmp_path / "absent.tar.gz"), "--cache", str(tmp_path / "cache"),
            "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "res")]
    res = accuracy.main(args)
    _check_provenance(res["provenance"])
    assert res["skipped"] and "CIFAR-10 skipped" in res["skipped"][0]  # absent archive: skipped, not failed
    summ = res["summary"]["digits"]
    assert set(summ) == {"vanilla", "mixup"}
    for s in summ.values():
        assert s["n"] == 2 and s["seeds"] == [0, 1]
        assert 0 <= min(s["values"]) and max(s["values"]) <= 100
        assert min(s["values"]) <= s["mean"] <= max(s["values"])
    out = tmp_path / "res"
    assert (out / "accuracy.png").stat().st_size > 0
    assert "± " in (out / "accuracy.md").read_text()
    lines = (out / "accuracy_runs.jsonl").read_text().splitlines()
    assert len(lines) == 4
    # a rerun with the same settings reuses the logged runs instead of training again
    res2 = accuracy.main(args)
    assert len((out / "accuracy_runs.jsonl").read_text().splitlines()) == 4
    assert res2["summary"]["digits"]["mixup"]["values"] == summ["mixup"]["values"]
