"""The notebooks committed with outputs (notebooks/render.py: RENDERED) still show what their code prints.

Each is re-executed in its real mode on the CPU and compared with the stored outputs, cell by cell, with tolerances
that fit what the cell shows (the same rules for every notebook in RENDERED):

* the printed text, numbers left out, must not change at all; so must the warnings (stderr, numbers and paths left
  out); timings, paths, dates and a training's per-epoch progress are not compared (``render.VOLATILE``);
* a cell that runs before any optimizer step shows fixed draws: every number within ``FIXED_TOL`` (relative, for
  numbers above 1);
* from the first optimizer step on (the fresh run's kernel counts them per cell; a training in a subprocess or in
  the cell that first imports torch is not seen), a cell shows a trained model: a top-1
  (a number followed by ``%``, or a value of a ``top-1 ... {head: value}`` mapping) within ``TOP1_TOL`` points,
  every other number within ``TRAINED_TOL`` (the main job's check uses the same two, benchmarks/main_job.py);
* figures: the same number per cell, the same size, and the images downsampled to ``THUMB`` pixels on their long
  side differ by at most ``IMAGE_TOL`` (mean absolute difference, 0..1) before a training and
  ``IMAGE_TOL_TRAINED`` after one.

The weak spots these rules close (issue 31): every figure replaced by a broken PNG, every head's top-1 lowered by
4.5 points, a mask range moved from 0.50 to 1.90, an ablation's mask std moved from 0.219 / 0.060 to
0.170 / 0.105, a fixed draw λ 0.776 -> 0.740, and any warning, all passed the notebook-wide tolerances before.
"""
import base64
import importlib.util
import io
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("nb_render", ROOT / "notebooks" / "render.py")
render = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render)

FIXED_TOL = 1e-4
TOP1_TOL = 0.5  # points
TRAINED_TOL = 0.01  # mask std, own area, ... of a trained model
THUMB = 64
# a re-run of 01 / 02 on the rendering CPU: figures within 0.007 (the stored ones carry a 128-colour palette); 02b's
# mask figure after a training whose mask std moved from 0.219 to 0.371: 0.049
IMAGE_TOL, IMAGE_TOL_TRAINED = 0.02, 0.03
# Re-run on another CPU model than the one that rendered the notebook (its provenance cell names it), a training's
# trajectory diverges in the last bits and then visibly: the main job's seed 0 moved 1.2 points of top-1 and 0.106 of
# mask std from an Intel Xeon to an AMD EPYC (benchmarks/main_job.py, OTHER_CPU_*). Cells after a training are then
# held to these wider bounds (the figure bound is chosen, not measured); cells before it stay at FIXED_TOL.
OTHER_CPU = dict(top1=2.0, trained=0.15, image=0.12)
_NUMBER = r"-?\d+(?:\.\d+)?(?:e-?\d+)?"


def _strip(text: str) -> str:
    for pattern in render.VOLATILE:
        text = re.sub(pattern, " ", text)
    return text


def _words(text: str) -> str:
    """The text without its numbers and volatile parts: what must not change at all."""
    return " ".join(re.sub(_NUMBER, "#", _strip(text)).split())


def _numbers(text: str) -> list[tuple[float, bool]]:
    """Each number of ``text`` (volatile parts removed) and whether it is a top-1 (``%`` or a top-1 mapping)."""
    text = _strip(text)
    top1 = [m.span(1) for m in re.finditer(r"top-?1[^{\n]*(\{[^}]*\})", text)]
    return [(float(m.group()), text[m.end():m.end() + 3].lstrip().startswith("%")
             or any(a <= m.start() < b for a, b in top1)) for m in re.finditer(_NUMBER, text)]


def _cells(nb) -> list[dict]:
    """Per code cell: its texts (stdout, text/plain), its stderr, its PNGs and the optimizer steps it ran."""
    out = []
    for cell in nb.cells:
        if cell.cell_type != "code" or render.MARK in cell.source:
            continue
        c = {"text": [], "stderr": [], "png": [], "steps": cell.metadata.get("render", {}).get("optimizer_steps", 0)}
        last = None  # a stream printed in several chunks (flush timing) is one text
        for o in cell.get("outputs", []):
            data = o.get("data", {})
            if o.get("output_type") == "stream":
                key = "text" if o.get("name") == "stdout" else "stderr"
                if last == o.get("name"):
                    c[key][-1] += o["text"]
                else:
                    c[key].append(o["text"])
                last = o.get("name")
                continue
            last = None
            if "image/png" in data:
                c["png"].append(data["image/png"])
            elif "text/plain" in data:
                c["text"].append(data["text/plain"])
            elif o.get("output_type") == "error":
                c["stderr"].append(f"{o.get('ename')}: {o.get('evalue')}")
        out.append(c)
    return out


def _thumb(png: str) -> tuple[np.ndarray, tuple[int, int]]:
    """An RGB image in [0, 1], downsampled (box filter) to ``THUMB`` pixels on its long side; its size appended."""
    from PIL import Image

    img = Image.open(io.BytesIO(base64.b64decode(png))).convert("RGB")
    w, h = img.size
    scale = THUMB / max(w, h)
    small = np.asarray(img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BOX), dtype=float)
    return small / 255.0, (w, h)


def _compare_figures(i: int, stored: list[str], fresh: list[str], tol: float) -> list[str]:
    if len(stored) != len(fresh):
        return [f"code cell {i}: {len(stored)} figures stored, {len(fresh)} now"]
    problems = []
    for j, (a, b) in enumerate(zip(stored, fresh)):
        try:
            (ta, size_a), (tb, size_b) = _thumb(a), _thumb(b)
        except Exception as e:  # noqa: BLE001 - a broken image is a difference
            problems.append(f"code cell {i}, figure {j}: not a readable PNG ({type(e).__name__}: {e})")
            continue
        if size_a != size_b:
            problems.append(f"code cell {i}, figure {j}: {size_a} px stored, {size_b} now")
        elif (diff := float(np.abs(ta - tb).mean())) > tol:
            problems.append(f"code cell {i}, figure {j}: differs by {diff:.3f} (mean of a {THUMB}-px thumbnail, "
                            f"tolerance {tol})")
    return problems


def _compare_numbers(i: int, a: str, b: str, trained: bool, same_cpu: bool = True) -> list[str]:
    problems = []
    top1_tol, trained_tol = (TOP1_TOL, TRAINED_TOL) if same_cpu else (OTHER_CPU["top1"], OTHER_CPU["trained"])
    for (x, is_top1), (y, _) in zip(_numbers(a), _numbers(b)):
        if trained:
            tol = top1_tol if is_top1 else max(trained_tol, FIXED_TOL * abs(x))
        else:
            tol = FIXED_TOL * max(1.0, abs(x))
        if abs(x - y) > tol:
            kind = "trained top-1" if trained and is_top1 else "trained" if trained else "fixed"
            problems.append(f"code cell {i}: {x} stored, {y} now ({kind}: tolerance {tol:g})")
    return problems


def compare(stored, fresh, same_cpu: bool = True) -> list[str]:
    """Every difference between the stored and the fresh outputs that the per-cell tolerances do not cover.
    Which cells show a trained model is read from ``fresh`` (its step counts come from the kernel); on another CPU
    model than the rendering one (``same_cpu=False``) cells after a training get the ``OTHER_CPU`` bounds."""
    old, new = _cells(stored), _cells(fresh)
    if len(old) != len(new):
        return [f"{len(old)} code cells stored, {len(new)} now"]
    problems, trained = [], False
    for i, (a, b) in enumerate(zip(old, new)):
        trained = trained or b["steps"] > 0
        for key in ("text", "stderr"):
            if [_words(t) for t in a[key]] != [_words(t) for t in b[key]]:
                problems.append(f"code cell {i}: the {key} changed:\n  stored {a[key]!r}\n  now    {b[key]!r}")
        if [_words(t) for t in a["text"]] == [_words(t) for t in b["text"]]:
            for t_a, t_b in zip(a["text"], b["text"]):
                problems += _compare_numbers(i, t_a, t_b, trained, same_cpu)
        img_tol = (IMAGE_TOL_TRAINED if same_cpu else OTHER_CPU["image"]) if trained else IMAGE_TOL
        problems += _compare_figures(i, a["png"], b["png"], img_tol)
    return problems


def _png(colour, size=(40, 30)) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _nb(*cells: tuple[str, int, list]) -> nbformat.NotebookNode:
    """A notebook of code cells, each (stdout text, optimizer steps, extra outputs)."""
    nb = nbformat.v4.new_notebook()
    for text, steps, extra in cells:
        cell = nbformat.v4.new_code_cell("pass", metadata={"render": {"optimizer_steps": steps}})
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text), *extra]
        nb.cells.append(cell)
    return nb


def _with(nb, cell: int, text: str):
    other = nbformat.reads(nbformat.writes(nb), 4)
    other.cells[cell].outputs[0]["text"] = text
    return other


def test_fixed_draws_are_compared_at_1e_4_and_timings_not_at_all():
    stored = _nb(("lam_mb=0.776 perm_mb=[0, 4, 1] in 75.2 s\n", 0, []))
    assert compare(stored, _with(stored, 0, "lam_mb=0.776 perm_mb=[0, 4, 1] in 12.0 s\n")) == []
    assert compare(stored, _with(stored, 0, "lam_mb=0.740 perm_mb=[0, 4, 1] in 75.2 s\n"))  # issue 31: passed
    assert compare(stored, _with(stored, 0, "lam_mb=0.7761 perm_mb=[0, 4, 1] in 75.2 s\n")) == []
    assert compare(stored, _with(stored, 0, "lam_mb=0.776 perm_mb=[0, 1, 4] in 75.2 s\n"))
    untrained = _nb(("own-weight range of the untrained mask: 0.50 0.51\n", 0, []))
    assert compare(untrained, _with(untrained, 0, "own-weight range of the untrained mask: 1.90 0.51\n"))


def test_a_trained_top1_may_move_half_a_point_other_trained_numbers_0_01():
    line = "one_q top-1 {:.1f}%, mask std {:.3f} (flat = 0), mean own area 0.46\n"
    stored = _nb(("batch (6, 3, 16, 16)\n", 0, []), (line.format(94.6, 0.219), 400, []),
                 ("final top-1 per head: {'one_k': 99.4, 'mix_k': 99.4}\none_k   99.40 %\n", 0, []))
    assert compare(stored, _with(stored, 1, line.format(94.2, 0.225))) == []
    assert compare(stored, _with(stored, 1, line.format(94.0, 0.219)))  # top-1: 0.6 points
    assert compare(stored, _with(stored, 1, line.format(94.6, 0.170)))  # issue 31: 0.219 -> 0.170 passed
    assert compare(stored, _with(stored, 2, "final top-1 per head: {'one_k': 99.0, 'mix_k': 99.4}\n"
                                            "one_k   99.40 %\n")) == []  # after the training: trained rules
    assert compare(stored, _with(stored, 2, "final top-1 per head: {'one_k': 94.9, 'mix_k': 99.4}\n"
                                            "one_k   99.40 %\n"))  # issue 31: -4.5 points passed
    assert compare(stored, _with(stored, 2, "final top-1 per head: {'one_k': 99.4, 'mix_k': 99.4}\n"
                                            "one_k   98.80 %\n"))
    assert compare(stored, _with(stored, 0, "batch (6, 3, 16, 15)\n"))  # before it: fixed
    chunked = _with(stored, 0, "batch (6, 3,")
    chunked.cells[0].outputs.append(nbformat.v4.new_output("stream", name="stdout", text=" 16, 16)\n"))
    assert compare(stored, chunked) == []  # the same text printed in two chunks


def test_warnings_are_compared():
    warn = nbformat.v4.new_output("stream", name="stderr", text="/tmp/ipykernel_1/2.py:6: UserWarning: x\n")
    stored = _nb(("ok\n", 0, [warn]))
    fresh = _nb(("ok\n", 0, [nbformat.v4.new_output("stream", name="stderr",
                                                     text="/tmp/ipykernel_9/8.py:7: UserWarning: x\n")]))
    assert compare(stored, fresh) == []  # the kernel's file and line are not compared
    assert compare(stored, _nb(("ok\n", 0, [])))  # the warning went away
    assert compare(_nb(("ok\n", 0, [])), stored)  # a new warning


def test_figures_are_compared_as_downsampled_images():
    fig = lambda png: nbformat.v4.new_output("display_data", data={"image/png": png, "text/plain": "<Figure>"})
    stored = _nb(("ok\n", 0, [fig(_png((200, 40, 40)))]), ("trained\n", 5, [fig(_png((200, 40, 40)))]))
    same = _nb(("ok\n", 0, [fig(_png((202, 41, 40)))]), ("trained\n", 5, [fig(_png((205, 45, 42)))]))
    assert compare(stored, same) == []
    broken = _nb(("ok\n", 0, [fig("iVBORw0KGgoAAAANSUhEUgAA")]), ("trained\n", 5, [fig(_png((200, 40, 40)))]))
    assert any("not a readable PNG" in p for p in compare(stored, broken))  # issue 31: passed
    other = _nb(("ok\n", 0, [fig(_png((40, 40, 200)))]), ("trained\n", 5, [fig(_png((40, 40, 200)))]))
    assert len(compare(stored, other)) == 2
    resized = _nb(("ok\n", 0, [fig(_png((200, 40, 40), (41, 30)))]), ("trained\n", 5, [fig(_png((200, 40, 40)))]))
    assert compare(stored, resized) and compare(stored, _nb(("ok\n", 0, []), ("trained\n", 5, [])))


def rendering_cpu(nb) -> str:
    """The CPU model the provenance cell of a rendered notebook names ('' if none)."""
    for c in nb.cells:
        if c.cell_type == "markdown" and render.MARK in c.source:
            m = re.search(r"on \d{4}-\d{2}-\d{2}: (.+?), \d+ cores", c.source)
            return m[1] if m else ""
    return ""


def test_rendering_cpu_is_read_from_every_stored_notebook():
    for name in render.RENDERED:
        assert rendering_cpu(nbformat.read(ROOT / name, as_version=4)), f"{name}: no CPU model in its provenance cell"


def test_another_cpu_widens_only_the_cells_after_a_training():
    line = "mask std {:.3f} top-1 {:.1f}%\n"
    stored = _nb(("lam 0.776\n", 0, []), (line.format(0.219, 94.2), 5, []))
    moved = _nb(("lam 0.776\n", 0, []), (line.format(0.300, 95.6), 5, []))
    assert compare(stored, moved) and compare(stored, moved, same_cpu=False) == []
    drawn = _nb(("lam 0.740\n", 0, []), (line.format(0.219, 94.2), 5, []))
    assert compare(stored, drawn, same_cpu=False)  # a fixed draw is still fixed
    broken = _nb(("lam 0.776\n", 0, []), (line.format(0.010, 10.0), 5, []))
    assert len(compare(stored, broken, same_cpu=False)) == 2


@pytest.mark.slow  # re-executes each notebook in real mode: several minutes on 2 cores
@pytest.mark.parametrize("name", list(render.RENDERED))
def test_stored_outputs_are_current(name):
    stored = nbformat.read(ROOT / name, as_version=4)
    assert any(render.MARK in c.source for c in stored.cells if c.cell_type == "markdown"), \
        f"{name} has no provenance cell: run python notebooks/render.py {name}"
    assert any(c.get("outputs") for c in stored.cells if c.cell_type == "code"), f"{name} was committed empty"
    rendered_on = rendering_cpu(stored)
    fresh = render.execute(ROOT / name)
    stored.cells = [c for c in stored.cells if render.MARK not in c.source]
    problems = compare(stored, fresh, same_cpu=rendered_on == render.cpu_model())
    assert not problems, f"{name}: stored outputs are stale; run python notebooks/render.py {name}\n" + \
        "\n".join(problems[:10])
