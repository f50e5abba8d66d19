"""Smoke tests of the benchmark harnesses: each runs with tiny settings into tmp_path and writes the
documented JSON schema (provenance, settings, per-method results)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

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
    for s in stats.values():
        assert s["n"] == 2 and len(s["times_ms"]) == 2
        lo, hi = sorted(s["times_ms"])
        assert s["median_ms"] == pytest.approx((lo + hi) / 2, abs=2e-3)  # the median of the two recorded steps
        assert s["q1_ms"] <= s["median_ms"] <= s["q3_ms"]
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


@pytest.mark.slow  # a training or fresh interpreters: 6-13 s (benchmarks/results/test_time_cpu.md)
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


@pytest.mark.slow  # a training or fresh interpreters: 6-13 s (benchmarks/results/test_time_cpu.md)
def test_gpu_quick_cpu_all_sections_and_resumable_accuracy(tmp_path):
    gpu = _load("gpu")
    common = ["--device", "cpu", "--quick", "--out", str(tmp_path / "res"), "--cache", str(tmp_path / "cache")]
    res = gpu.main(common + ["--sections", "step", "loader", "train"])
    _check_provenance(res["provenance"])
    assert len(res["provenance"]["git"]["commit"] or "0" * 40) == 40
    rows = res["sections"]["step"]["rows"]
    assert [r["method"] for r in rows] == ["vanilla", "mixup", "cutmix", "automix"]
    for r in rows:
        assert r["eager"]["ms"] > 0 and r["eager"]["img_s"] > 0 and r["eager"]["ratio"] > 0
        assert "CUDA" in r["graph"]["na"]  # no CUDA graph on the CPU: reported, not failed
        assert "ms" in r["fused"] or r["fused"]["na"]
    assert rows[0]["eager"]["ratio"] == pytest.approx(1.0)
    loaders = {r["variant"]: r for r in res["sections"]["loader"]["runs"]}
    assert set(loaders) == {"dataloader", "device"} and all(r["img_s"] > 0 for r in loaders.values())
    runs = res["sections"]["train"]["runs"]
    assert {(r["method"], r["variant"]) for r in runs} >= {("vanilla", "dataloader"), ("vanilla", "device"),
                                                           ("automix", "dataloader"), ("automix", "device")}
    assert all(r["img_s_last_epoch"] > 0 and r["steps_per_epoch"] == 4 for r in runs)

    # accuracy: the first invocation pauses every run mid-epoch (a resumable checkpoint), the second finishes them
    first = gpu.main(common + ["--sections", "accuracy", "--stop-after-steps", "3"])
    status = first["sections"]["accuracy"]["status"]
    assert [s["state"] for s in status.values()] == ["paused"] * 3 and "summary" not in first["sections"]["accuracy"]
    for s in status.values():
        assert list(Path(s["out"]).glob("checkpoint-interrupt-*.pt"))
    second = gpu.main(common + ["--sections", "accuracy"])
    acc = second["sections"]["accuracy"]
    assert all(s["state"] == "done" and s["epochs"] == 2 for s in acc["status"].values())
    assert set(acc["summary"]) == {"vanilla", "mixup", "automix"}
    assert set(acc["summary"]["automix"]["median_last_k"]) == {"one_k", "mix_k", "one_q", "mix_q"}
    on_disk = json.loads((tmp_path / "res" / "gpu_cpu_quick.json").read_text())
    assert set(on_disk["sections"]) == {"step", "loader", "train", "accuracy"}  # earlier sections kept
    md = (tmp_path / "res" / "gpu_cpu_quick.md").read_text()
    assert "| automix | one_q" in md and "Command:" in md and "n/a" in md


def test_gpu_budget_spent_skips_cleanly(tmp_path):
    gpu = _load("gpu")
    res = gpu.main(["--device", "cpu", "--quick", "--budget-s", "0", "--out", str(tmp_path / "res"),
                    "--cache", str(tmp_path / "cache")])
    assert all("budget" in r[p]["na"] for r in res["sections"]["step"]["rows"] for p in gpu.PATHS)
    assert all("budget" in r["na"] for r in res["sections"]["train"]["runs"] + res["sections"]["loader"]["runs"])
    assert {s["state"] for s in res["sections"]["accuracy"]["status"].values()} == {"pending"}
    assert "Not finished yet" in (tmp_path / "res" / "gpu_cpu_quick.md").read_text()


def test_gpu_records_a_failing_path_and_goes_on(tmp_path, monkeypatch):
    gpu = _load("gpu")

    def broken(*a, **k):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(sys.modules["gpu_step"], "make_runner", broken)  # section (a) lives in gpu_step.py
    res = gpu.main(["--device", "cpu", "--quick", "--sections", "step", "--out", str(tmp_path / "res"),
                    "--cache", str(tmp_path / "cache")])
    rows = res["sections"]["step"]["rows"]
    assert len(rows) == 4 and all("simulated" in r["eager"]["na"] for r in rows)


def test_gpu_train_section_builds_every_cuda_variant_config(tmp_path):
    """gpu.py once built a graphed vanilla config outside its try: validation raised, every CUDA run crashed."""
    import argparse

    gpu = _load("gpu")
    args = argparse.Namespace(seed=0, workers=0, quick=True)
    cuda = torch.device("cuda", 0)  # configs only: nothing runs on the device
    seen = []
    for method in ("vanilla", "automix"):
        for name, kw in gpu.train_variants(method, cuda):
            gpu.cifar_config(args, cuda, tmp_path, method=method, epochs=1, out=str(tmp_path / name), **kw)
            seen.append((method, name))
    assert ("automix", "device+graph") in seen and ("vanilla", "device+graph") not in seen


def test_small_data_and_busy_neighbour_smoke(tmp_path):
    sd = _load("small_data")
    res = sd.main(["--quick", "--settings", "digits_200", "--methods", "vanilla", "automix", "--seeds", "0", "1",
                   "--out", str(tmp_path / "sd"), "--runs-dir", str(tmp_path / "runs")])
    s = res["summary"]["digits_200"]
    assert set(s["methods"]) == {"vanilla", "automix"} and s["methods"]["automix"]["n"] == 2
    assert s["vs_vanilla"]["automix"]["n"] == 2
    assert (tmp_path / "sd" / "small_data.png").is_file()
    again = sd.main(["--quick", "--settings", "digits_200", "--methods", "vanilla", "automix", "--seeds", "0", "1",
                     "--out", str(tmp_path / "sd"), "--runs-dir", str(tmp_path / "runs")])  # resumes: runs nothing
    assert again["summary"] == res["summary"]
    assert len((tmp_path / "sd" / "small_data_runs.jsonl").read_text().splitlines()) == 4


def test_small_data_paired_statistics():
    sd = _load("small_data")
    p = sd.paired([2.0, 3.0, 4.0], [1.0, 1.0, 1.0])
    assert p["mean_diff"] == 2.0 and p["wins"] == 3 and p["std_diff"] == 1.0
    assert p["t"] == pytest.approx(2.0 / (1.0 / 3 ** 0.5))
    with pytest.raises(ValueError):
        sd.paired([1.0], [1.0, 2.0])


def test_speed_steps_do_not_read_the_labels_back_like_the_trainer(monkeypatch):
    """The timed eager steps once passed check_labels=True (host reads per step) where train() passes False."""
    speed = _load("speed")
    seen = []
    real_step, real_mix = speed.fast_training_step, speed.mix
    monkeypatch.setattr(speed, "fast_training_step",
                        lambda *a, **k: seen.append(("automix", k.get("check_labels"))) or real_step(*a, **k))
    monkeypatch.setattr(speed, "mix", lambda *a, **k: seen.append(("mix", k.get("check_labels"))) or real_mix(*a, **k))
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    for name in ("automix", "cutmix"):
        speed.make_runner(name, "resnet_tiny_cifar", x, y, 4, torch.device("cpu"), 0, 10).step(0)
    assert seen == [("automix", False), ("mix", False)]


def test_small_data_preset_is_the_studied_setting():
    """TrainConfig.preset('small_data') is the quick preset with the study's setting, as docs/recipes.md says."""
    from automix_lite import TrainConfig

    sd = _load("small_data")
    preset = TrainConfig.preset("small_data", out="x")
    studied = TrainConfig.preset("quick", **sd.SETTINGS[sd.PRESET_SETTING], out="x")
    where = dict(data_dir=preset.data_dir, download=preset.download)  # where the data lives is not the setting
    assert preset.replace(preset_name="quick") == studied.replace(**where)


def test_notebook_03_quotes_the_published_small_data_study():
    """The expected outcome notebook 03 prints before training is the committed study's, digit for digit."""
    import ast
    import re

    nb = json.loads((BENCH.parent / "notebooks" / "03_train_automix.ipynb").read_text())
    code = next("".join(c["source"]) for c in nb["cells"] if "PUBLISHED = " in "".join(c["source"]))
    published = ast.literal_eval(re.search(r"^PUBLISHED = (.*)$", code, re.M).group(1))
    paired = ast.literal_eval(re.search(r"^PAIRED_VS_VANILLA = (.*)$", code, re.M).group(1))
    sd = _load("small_data")
    study = json.loads((BENCH / "results" / "small_data.json").read_text())["summary"][sd.PRESET_SETTING]
    for m, s in study["methods"].items():
        assert published[m] == {"mean": round(s["mean"], 2), "std": round(s["std"], 2), "n": s["n"]}, m
    for m, p in study["vs_vanilla"].items():
        assert paired[m] == {k: (round(p[k], 2) if isinstance(p[k], float) else p[k])
                             for k in ("mean_diff", "std_diff", "wins", "n")}, m


def test_busy_neighbour_variants_and_ratios():
    bn = _load("busy_neighbour")
    vs = bn.variants(2, [1000])
    assert list(vs)[:2] == ["as typed", "before (spin, 2 threads)"]
    assert vs["as typed"] == (["-m", "automix_lite"], {}, [])  # nothing set: what the user types
    assert vs["passive, 1 thread(s)"][1] == {"OMP_WAIT_POLICY": "PASSIVE"} and "GOMP_SPINCOUNT=1000" in vs
    code = vs["before (spin, 2 threads)"][0][1]
    assert code.index("torch") < code.index("automix_lite")  # torch first: OpenMP keeps its default
    run = lambda wall, top1: {"wall_s": wall, "final_top1": {"one_k": top1}}
    res = {"idle": {"as typed": run(10, 90.0), "before (spin, 2 threads)": run(9, 91.0)},
           "loaded": {"as typed": run(20, 90.0), "before (spin, 2 threads)": run(60, 91.0)}}
    r = bn.ratios(res)
    assert r["best_variant"] == "as typed" and r["as_typed_over_best"] == 1.0
    assert r["before_over_as_typed"] == 3.0 and r["as_typed_loaded_over_idle"] == 2.0
    assert r["idle_as_typed_over_best"] == pytest.approx(10 / 9)
    assert r["same_results"]["loaded as typed"] and not r["same_results"]["loaded before (spin, 2 threads)"]


@pytest.mark.slow
def test_gpu_acceptance_dry_run_passes_on_the_cpu(tmp_path):
    """benchmarks/gpu_accept.py runs every check tiny on the CPU (graphs as eager twins; CUDA-only parts skip)."""
    accept = _load("gpu_accept")
    assert accept.main(["--dry-run", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "gpu_accept_dryrun_cpu.json").read_text())["results"]
    assert set(results) == set(accept.CHECKS)
    assert {k for k, v in results.items() if v["status"] == "SKIP"} == {"cuda_tests", "low_precision"}
    assert results["fallback"]["warnings"] == 1 and all(r["resume_equal"] for k, r in results["train_e2e"].items()
                                                         if isinstance(r, dict))
    assert {k for k, r in results["train_e2e"].items() if isinstance(r, dict)} == {"separate", "graph",
                                                                                   "device_data", "fused"}


def test_gpu_acceptance_reports_a_failing_check_and_exits_1(tmp_path, monkeypatch):
    accept = _load("gpu_accept")
    monkeypatch.setitem(accept.CHECKS, "amp_policy", lambda args, dev, budget: accept._result("FAIL", why="injected"))
    assert accept.main(["--dry-run", "--only", "amp_policy", "--out", str(tmp_path)]) == 1
    assert "| amp_policy | FAIL |" in (tmp_path / "gpu_accept_dryrun_cpu.md").read_text()


def test_check_cost_times_the_check_and_a_step(monkeypatch):
    cost = _load("check_cost")
    import automix_lite.trainer.fastpaths as fastpaths

    monkeypatch.setattr(fastpaths, "uses_fused", lambda mode, device: mode in ("auto", "fused"))
    row = cost.measure("resnet_tiny_cifar", 16, 8, torch.device("cpu"), rounds=1)
    assert row["step_s"] > 0 and row["check_s"] > 0 and row["probe_batch"] == 8
    assert row["check_over_step"] == pytest.approx(row["check_s"] / row["step_s"])
