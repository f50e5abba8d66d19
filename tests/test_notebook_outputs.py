"""The notebooks committed with outputs (notebooks/render.py: RENDERED) still show what their code prints.

Each is re-executed in its real mode on the CPU and compared with the stored outputs: the same cells print, with the
same text around the numbers, and every number within the notebook's tolerance (timings, paths and dates left out).
Images are not compared pixel by pixel; each cell that stored a figure must still draw one."""
import importlib.util
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("nb_render", ROOT / "notebooks" / "render.py")
render = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render)


def _words(text: str) -> str:
    """The text without its numbers and volatile parts: what must not change at all."""
    for pattern in render.VOLATILE:
        text = re.sub(pattern, " ", text)
    return " ".join(re.sub(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", "#", text).split())


def _images(nb) -> list[bool]:
    return [any("image/png" in o.get("data", {}) for o in c.get("outputs", [])) for c in nb.cells
            if c.cell_type == "code"]


def compare(stored, fresh, rtol: float, atol: float) -> list[str]:
    """Every difference between the stored and the fresh outputs that the tolerances do not cover."""
    problems = []
    for i, (a, b) in enumerate(zip(render.output_texts(stored), render.output_texts(fresh))):
        if [_words(t) for t in a] != [_words(t) for t in b]:
            problems.append(f"code cell {i}: the printed text changed:\n  stored {a!r}\n  now    {b!r}")
            continue
        for t_a, t_b in zip(a, b):
            for x, y in zip(render.numbers(t_a), render.numbers(t_b)):
                if abs(x - y) > max(atol, rtol * abs(x)):
                    problems.append(f"code cell {i}: {x} stored, {y} now (tolerance rtol={rtol}, atol={atol})")
    if _images(stored) != _images(fresh):
        problems.append("the cells that draw figures changed")
    return problems


def test_compare_notices_a_changed_number_and_ignores_timings():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(1)")])
    other = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(1)")])
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="top-1 98.40 % in 75.2 s\n")]
    other.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="top-1 98.40 % in 12.0 s\n")]
    assert compare(nb, other, 1e-4, 1e-4) == []  # only the time differs
    other.cells[0].outputs[0]["text"] = "top-1 97.00 % in 75.2 s\n"
    assert len(compare(nb, other, 1e-4, 1e-4)) == 1 and compare(nb, other, 0.05, 1.5) == []
    other.cells[0].outputs[0]["text"] = "top-1 98.40 % in 75.2 s\n[automix_lite] epoch 1/9 loss=7.1 (3.0s)\n"
    nb.cells[0].outputs[0]["text"] = "top-1 98.40 % in 75.2 s\n[automix_lite] epoch 1/9 loss=6.2 (3.1s)\n"
    assert compare(nb, other, 1e-4, 1e-4) == []  # per-epoch progress is not compared, the run's end is


@pytest.mark.slow  # re-executes each notebook in real mode: about 7 minutes on 2 cores
@pytest.mark.parametrize("name", list(render.RENDERED))
def test_stored_outputs_are_current(name):
    stored = nbformat.read(ROOT / name, as_version=4)
    assert any(render.MARK in c.source for c in stored.cells if c.cell_type == "markdown"), \
        f"{name} has no provenance cell: run python notebooks/render.py {name}"
    assert any(c.get("outputs") for c in stored.cells if c.cell_type == "code"), f"{name} was committed empty"
    fresh = render.execute(ROOT / name)
    stored.cells = [c for c in stored.cells if render.MARK not in c.source]
    rtol, atol = render.RENDERED[name]
    problems = compare(stored, fresh, rtol, atol)
    assert not problems, f"{name}: stored outputs are stale; run python notebooks/render.py {name}\n" + \
        "\n".join(problems[:10])
