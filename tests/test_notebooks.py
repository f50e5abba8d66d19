"""The notebooks as files: committed without outputs, one documented install source for Colab.

(Running them is nbval's job: `AUTOMIX_SMOKE=1 python -m pytest` executes every notebook.)"""
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = [ROOT / "demo.ipynb"] + sorted((ROOT / "notebooks").glob("*.ipynb"))
URL = "git+https://github.com/automix-lite/automix_lite"


def _code_cells(path):
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def _rendered() -> set[str]:
    """File names of the notebooks notebooks/render.py stores with outputs."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("nb_render_list", ROOT / "notebooks" / "render.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return {Path(n).name for n in mod.RENDERED}


RENDERED = _rendered()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_with_outputs_only_when_rendered(path):
    """The notebooks notebooks/render.py runs carry their real-mode outputs (checked current by
    tests/test_notebook_outputs.py); the others (GPU-sized) are committed empty."""
    code = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    if path.name in RENDERED:
        assert any(c["outputs"] for c in code), f"{path.name}: run python notebooks/render.py"
        assert path.stat().st_size < 1_500_000, "keep the stored figures small (render.py's DPI and palette)"
    else:
        assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_colab_install_cell_takes_its_source_from_one_variable(path, monkeypatch):
    cells = _code_cells(path)
    install = cells[0]
    assert "AUTOMIX_LITE_SOURCE" in install.split("import os")[0]  # documented in the comment above the code
    assert sum(URL in c for c in cells) == 1 and install.count(URL) == 1  # the URL is written once
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda args, **kw: calls.append(list(args)))
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setenv("AUTOMIX_LITE_SOURCE", "git+https://example.org/fork/automix_lite@branch")
    exec(compile(install, path.name, "exec"), {})
    assert calls[0][-1] == "git+https://example.org/fork/automix_lite@branch" and "--no-deps" in calls[0]
    assert all("torch" not in a and "ipywidgets" not in a for c in calls for a in c[4:])  # Colab's stay put
    calls.clear()
    monkeypatch.delenv("AUTOMIX_LITE_SOURCE")
    exec(compile(install, path.name, "exec"), {})
    assert calls[0][-1] == URL
    monkeypatch.delitem(sys.modules, "google.colab")
    calls.clear()
    exec(compile(install, path.name, "exec"), {})
    assert calls == []  # outside Colab nothing is installed


def test_exercises_are_left_to_the_learner_and_the_solutions_are_right():
    """The exercise cells of 02b raise until edited; the reference solutions (which CI fills in) equal the library."""
    import importlib.util

    import torch
    import torch.nn.functional as F

    from automix_lite import mask_loss

    nb = ROOT / "notebooks" / "02b_the_training_step.ipynb"
    exercises = [c for c in _code_cells(nb) if "YOUR CODE HERE" in c]
    assert len(exercises) >= 2 and all("raise NotImplementedError" in c for c in exercises)
    spec = importlib.util.spec_from_file_location("sol", ROOT / "notebooks" / "solutions" / "training_step.py")
    sol = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sol)
    g = torch.Generator().manual_seed(0)
    logits, y, perm = torch.randn(6, 4, generator=g), torch.randint(0, 4, (6,), generator=g), torch.randperm(6, generator=g)
    want = 0.3 * F.cross_entropy(logits, y) + 0.7 * F.cross_entropy(logits, y[perm])
    assert torch.allclose(sol.mixed_ce(logits, y, perm, 0.3), want)
    partner = torch.rand(3, 1, 5, 5, generator=g)
    mask = torch.cat([1 - partner, partner], 1)
    for lam in (0.2, 0.5, 0.9):
        torch.testing.assert_close(sol.l1_mask_loss(mask, lam, 0.1), mask_loss(mask, lam, "L1", 0.1))


COURSE = ["01_mixup_zoo", "02_mix_block", "02b_the_training_step", "03_train_automix", "04_mask_explorer",
          "05_scale_to_imagenet"]


@pytest.mark.parametrize("name", COURSE)
def test_every_course_notebook_has_equations_and_checked_exercises(name):
    """At least two exercises a learner edits (they raise until edited), each followed by a checking cell that CI
    runs on the reference solution; the solutions named in the checks exist; the maths is written as equations."""
    import importlib.util
    import re

    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    markdown = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"]
    code = _code_cells(ROOT / "notebooks" / f"{name}.ipynb")
    assert sum("$$" in m for m in markdown) >= 1, "no displayed equation"
    exercises = [i for i, c in enumerate(code) if "YOUR CODE HERE" in c]
    assert len(exercises) >= 2 and all("raise NotImplementedError" in code[i] for i in exercises)
    for i in exercises:  # the next code cell checks the exercise, with the reference solution under CI
        checked = "assert" in code[i + 1] or ".check_" in code[i + 1]  # inline, or a grader of notebooks/checks/
        assert "AUTOMIX_SOLUTIONS" in code[i + 1] and checked, code[i + 1][:200]
    for module, func in re.findall(r'solution\("(\w+)"(?:, "(\w+)")?\)', "\n".join(code)):
        path = ROOT / "notebooks" / "solutions" / (f"{module}.py" if func else "training_step.py")
        spec = importlib.util.spec_from_file_location(f"sol_{path.stem}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        assert callable(getattr(mod, func or module)), (module, func)
