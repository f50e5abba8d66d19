"""The oldest torch / torchvision / timm that pyproject.toml allows are tested, not just claimed (issue 21).

``.ci/run`` builds a second venv with exactly the floors of pyproject.toml and sets ``AUTOMIX_FLOOR_PYTHON``; this
test runs the core tests there on this checkout (mixers, Mix Block, AutoMix step, interop, fused pass, transforms,
the trainer, saved runs and the refusal of pickled code: on torch 2.3 ``torch.load`` runs pickled code by default).
Locally it skips without that venv (CI requires it: the "floor" suite)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE_TESTS = ("test_mixing.py", "test_mixblock.py", "test_automix.py", "test_interop.py", "test_fused.py",
              "test_transforms.py", "test_train.py",
              # the pickle refusals: torch < 2.6 loads with weights_only=False unless the library asks for True
              "test_saved.py", "test_user_api.py")


def _floors() -> dict[str, str]:
    text = (ROOT / "pyproject.toml").read_text()
    return {name: version for name, version in re.findall(r'"(torch|torchvision|timm)>=([\d.]+)"', text)}


def test_the_ci_floor_pins_are_the_pyproject_floors():
    ci = (ROOT / ".ci" / "run").read_text()
    pins = dict(re.findall(r"\b(torch|torchvision|timm)==([\d.]+)", ci.split("FLOOR=")[1]))
    floors = _floors()
    assert set(floors) == {"torch", "torchvision", "timm"}
    assert all(pins[k].startswith(v) for k, v in floors.items()), (pins, floors)


def test_the_floor_list_names_existing_files_and_the_pickle_refusals():
    """A renamed test file would make the floor run error out; the pickle refusals must stay on the list (on torch
    2.3 deleting the library's weights_only=True lets a checkpoint run code, and only the floor run sees it)."""
    assert all((ROOT / "tests" / t).is_file() for t in CORE_TESTS), CORE_TESTS
    assert {"test_saved.py", "test_user_api.py"} <= set(CORE_TESTS)


@pytest.mark.slow
def test_core_tests_pass_on_the_oldest_supported_versions():
    python = os.environ.get("AUTOMIX_FLOOR_PYTHON")
    if not python or not Path(python).exists():
        pytest.skip("no torch-floor venv (.ci/run builds it and sets AUTOMIX_FLOOR_PYTHON)")
    probe = subprocess.run([python, "-c", "import torch, torchvision, timm; print(torch.__version__, "
                            "torchvision.__version__, timm.__version__)"], capture_output=True, text=True, check=True)
    versions = dict(zip(("torch", "torchvision", "timm"), probe.stdout.split()))
    assert all(versions[k].startswith(v) for k, v in _floors().items()), versions
    env = {k: v for k, v in os.environ.items() if k != "AUTOMIX_REQUIRE_SUITES"}
    env["PYTHONPATH"] = str(ROOT)  # this checkout's automix_lite, not an installed copy
    proc = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                           *[f"tests/{t}" for t in CORE_TESTS]], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1500)
    tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
    print(f"[floor] {versions}: {tail.splitlines()[-1] if tail else ''}", file=sys.stderr)
    assert proc.returncode == 0, f"core tests failed on {versions}:\n{tail}\n{proc.stderr[-2000:]}"
