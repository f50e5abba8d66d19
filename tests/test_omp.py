"""OpenMP's wait policy (issue 24): passive before torch loads, never over the user's choice, recorded, warned.

The subprocess tests read what the OpenMP runtime itself reports (``OMP_DISPLAY_ENV=VERBOSE`` makes libgomp
print its settings when it loads): ``GOMP_SPINCOUNT = '0'`` is the passive policy in effect, the default spins
300,000 times. Nothing here is timed; the speed is measured in ``benchmarks/busy_neighbour.py``.
"""
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import automix_lite
from automix_lite import _omp, train

from conftest import fake_config

ROOT = Path(__file__).resolve().parents[1]


def _spincount(code_or_module: list[str], **env_changes: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env.update(OMP_DISPLAY_ENV="VERBOSE", **env_changes)
    out = subprocess.run([sys.executable, *code_or_module], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [ln for ln in (out.stdout + out.stderr).splitlines() if "GOMP_SPINCOUNT" in ln]
    if not lines:
        pytest.skip("this torch's OpenMP runtime is not libgomp (no GOMP_SPINCOUNT in OMP_DISPLAY_ENV)")
    return lines[0].split("=")[1].strip().strip("'")


@pytest.mark.slow  # a training or fresh interpreters: 6-13 s (benchmarks/results/test_time_cpu.md)
def test_cli_runs_with_passive_wait():
    assert _spincount(["-m", "automix_lite", "presets"]) == "0"


@pytest.mark.slow  # a training or fresh interpreters: 6-13 s (benchmarks/results/test_time_cpu.md)
def test_import_before_torch_gives_passive_wait_to_a_notebook():
    code = "import automix_lite, torch; print(automix_lite._omp.WAIT_POLICY); torch.ones(4).sum()"
    assert _spincount(["-c", code]) == "0"


@pytest.mark.slow  # a training or fresh interpreters: 6-13 s (benchmarks/results/test_time_cpu.md)
def test_torch_first_keeps_the_spinning_default_and_says_so():
    code = "import torch, automix_lite; assert automix_lite._omp.WAIT_POLICY.startswith('default')"
    assert _spincount(["-c", code]) not in ("0", "")


@pytest.mark.slow  # a training or fresh interpreters: 6-13 s (benchmarks/results/test_time_cpu.md)
def test_the_users_choice_is_never_overridden():
    assert int(_spincount(["-m", "automix_lite", "presets"], OMP_WAIT_POLICY="ACTIVE")) > 300_000


def test_prefer_passive_wait_pure():
    env: dict = {}
    assert _omp.prefer_passive_wait(env, loaded=False).startswith("PASSIVE") and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {"OMP_WAIT_POLICY": "active"}
    assert _omp.prefer_passive_wait(env, loaded=False) == "OMP_WAIT_POLICY=active (set by the user)"
    assert env == {"OMP_WAIT_POLICY": "active"}
    env = {}
    assert _omp.prefer_passive_wait(env, loaded=True).startswith("default") and env == {}
    env = {"GOMP_SPINCOUNT": "10000"}  # libgomp's own knob: also the user's choice, left alone
    assert _omp.prefer_passive_wait(env, loaded=False) == "GOMP_SPINCOUNT=10000 (set by the user)"
    assert env == {"GOMP_SPINCOUNT": "10000"}


def test_openmp_loaded_reads_the_process_maps(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f01 r-xp 0 0:0 0 /usr/lib/libgomp.so.1\n")
    assert _omp.openmp_loaded(modules={}, maps=str(maps))
    maps.write_text("7f00-7f01 r-xp 0 0:0 0 /usr/lib/libc.so.6\n")
    assert not _omp.openmp_loaded(modules={}, maps=str(maps))
    assert _omp.openmp_loaded(modules={"torch": object()}, maps=str(tmp_path / "absent"))


def _tiny(tmp_path):
    return fake_config(tmp_path, train_subset=8, method="vanilla")


def test_train_records_the_policy_and_warns_once_when_too_late(tmp_path, monkeypatch):
    import importlib

    tm = importlib.import_module("automix_lite.train")
    monkeypatch.setattr(_omp, "WAIT_POLICY", "default (OpenMP started before automix_lite was imported)")
    monkeypatch.setattr(tm, "_SPIN_WARNED", False)
    with pytest.warns(RuntimeWarning, match="Import automix_lite before torch"):
        train(_tiny(tmp_path), figures=False, progress="off")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["environment"]["omp_wait_policy"].startswith("default")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # once per process, not once per run
        train(_tiny(tmp_path), figures=False, progress="off")


def test_train_does_not_warn_when_passive(tmp_path, monkeypatch):
    import importlib

    tm = importlib.import_module("automix_lite.train")
    monkeypatch.setattr(_omp, "WAIT_POLICY", "PASSIVE (set by automix_lite)")
    monkeypatch.setattr(tm, "_SPIN_WARNED", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        train(_tiny(tmp_path), figures=False, progress="off")
    assert automix_lite._omp.WAIT_POLICY.startswith("PASSIVE")


@pytest.mark.parametrize("path", [ROOT / "demo.ipynb", *sorted((ROOT / "notebooks").glob("*.ipynb"))],
                         ids=lambda p: p.name)
def test_notebooks_import_automix_lite_before_torch(path):
    import re

    lines = [ln for cell in json.loads(path.read_text())["cells"] if cell["cell_type"] == "code"
             for ln in "".join(cell["source"]).splitlines()]
    first = {name: next((i for i, ln in enumerate(lines) if re.match(rf"(import|from) {name}\b", ln)), None)
             for name in ("automix_lite", "torch")}
    assert first["torch"] is None or (first["automix_lite"] is not None and first["automix_lite"] < first["torch"]), (
        f"{path.name} imports torch (code line {first['torch']}) before automix_lite: OpenMP would keep spinning")
