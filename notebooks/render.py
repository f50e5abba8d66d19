"""Run the notebooks that finish on a CPU in a few minutes, in their real (non-smoke) mode, and store their outputs,
so GitHub shows every printed number and figure. A second cell says where, when and with what they were made.

    python notebooks/render.py                 # every notebook in RENDERED (about 7 minutes on 2 cores)
    python notebooks/render.py demo.ipynb      # one

``tests/test_notebook_outputs.py`` re-executes them the same way and fails when the stored outputs are no longer
what the code prints, cell by cell: text, numbers, warnings and figures (timings are not compared). Its tolerances
follow what each cell shows: a cell that runs before any training prints fixed draws (numbers within 1e-4); from
the first optimizer step on (counted in the kernel, see ``STEPS_MARK``) a cell shows a trained model, whose top-1
may move by 0.5 points on another CPU, as the main job's check allows.
"""
from __future__ import annotations

import base64
import datetime as _dt
import io
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
# the notebooks stored with outputs; their tolerances are per cell (tests/test_notebook_outputs.py), not per notebook
RENDERED = ("demo.ipynb", "notebooks/01_mixup_zoo.ipynb", "notebooks/02_mix_block.ipynb",
            "notebooks/02b_the_training_step.ipynb", "notebooks/02c_ablations.ipynb",
            "notebooks/03_train_automix.ipynb", "notebooks/04_mask_explorer.ipynb",
            "notebooks/04b_label_mismatch.ipynb", "notebooks/05_scale_to_imagenet.ipynb")
MARK = "<!-- rendered-outputs -->"
# what changes from run to run, or between two CPUs, without the code changing: per-epoch progress (a training's
# trajectory differs in the last bits from one CPU's kernels to another's; its end is compared), timings, paths
VOLATILE = [r"(?m)^\[automix_lite\] epoch .*$",  # per-epoch progress of a training: chaotic in the last bits
            r"best head: \w+",  # the best of tied heads can flip between machines
            r"\d+(\.\d+)?\s*(s|ms|min|sec|seconds)\b", r"\b(in|took|done in)\s+\d+(\.\d+)?", r"/tmp/[\w./-]+",
            r"0x[0-9a-f]+", r"\d+(\.\d+)?\s*it/s", r"\d{4}-\d{2}-\d{2}[T ][\d:]+"]


DPI = 72  # figures at 72 dpi, re-encoded with a 128-colour palette: the repository stays light
# The kernel counts optimizer steps (torch.optim's global step hook, installed once torch.optim is loaded) and ends
# each cell that stepped with this line on stderr; execute() removes it and keeps the count in the cell's metadata.
STEPS_MARK = "[render] optimizer steps in this cell:"
_STARTUP = f"""
def _automix_render_count_steps():  # IPython startup file written by notebooks/render.py
    import sys
    state = {{"steps": 0, "before": 0, "hooked": False}}

    def count(*_):
        state["steps"] += 1

    def hook():
        if not state["hooked"] and "torch.optim.optimizer" in sys.modules:
            sys.modules["torch.optim.optimizer"].register_optimizer_step_post_hook(count)
            state["hooked"] = True

    def pre(*_):
        hook()
        state["before"] = state["steps"]

    def post(*_):
        hook()
        if state["steps"] > state["before"]:
            print("{STEPS_MARK}", state["steps"] - state["before"], file=sys.stderr, flush=True)

    get_ipython().events.register("pre_run_cell", pre)
    get_ipython().events.register("post_run_cell", post)


_automix_render_count_steps()
del _automix_render_count_steps
"""


def kernel_env() -> dict:
    """Real mode: no AUTOMIX_SMOKE; the learner's exercises are checked against the reference solutions."""
    rc = Path(tempfile.mkdtemp(prefix="automix_mplrc_"))
    (rc / "matplotlibrc").write_text(f"figure.dpi: {DPI}\n")
    startup = rc / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-automix-render.py").write_text(_STARTUP)
    env = {k: v for k, v in os.environ.items() if k != "AUTOMIX_SMOKE"}
    env.update(AUTOMIX_SOLUTIONS="1", MPLBACKEND="module://matplotlib_inline.backend_inline", MATPLOTLIBRC=str(rc),
               IPYTHONDIR=str(rc / "ipython"),
               # a fresh run folder for notebooks that resume from one (03): a render or a re-run never resumes
               # from an earlier one's checkpoints, so what it prints is what a first run prints
               AUTOMIX_RUNS=tempfile.mkdtemp(prefix="automix_render_runs_"),
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return env


def _small_png(data: str) -> str:
    """A base64 PNG re-encoded with a 128-colour palette (about 3x smaller, the same picture to the eye)."""
    from PIL import Image

    img = Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB").quantize(colors=128)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode()


def execute(path: Path, timeout: int = 900) -> nbformat.NotebookNode:
    """The notebook at ``path`` executed in real mode (in its own folder), outputs included."""
    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if MARK not in c.source]  # the provenance cell is rewritten, not run
    saved = {k: os.environ.get(k) for k in ("AUTOMIX_SMOKE", "AUTOMIX_SOLUTIONS", "MPLBACKEND", "MATPLOTLIBRC",
                                            "PYTHONPATH", "IPYTHONDIR", "AUTOMIX_RUNS")}
    os.environ.pop("AUTOMIX_SMOKE", None)
    os.environ.update({k: v for k, v in kernel_env().items() if k in saved})
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    _take_step_counts(nb)
    return nb


def _take_step_counts(nb) -> None:
    """Move the kernel's per-cell optimizer-step lines (``STEPS_MARK``) from stderr to ``metadata.render``."""
    for cell in nb.cells:
        steps, kept = 0, []
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream" and o.get("name") == "stderr" and STEPS_MARK in o["text"]:
                lines = o["text"].splitlines(keepends=True)
                steps += sum(int(ln.split(STEPS_MARK)[1]) for ln in lines if STEPS_MARK in ln)
                o["text"] = "".join(ln for ln in lines if STEPS_MARK not in ln)
                if not o["text"]:
                    continue
            kept.append(o)
        if cell.cell_type == "code":
            cell.outputs = kept
            cell.metadata["render"] = {"optimizer_steps": steps}


def cpu_model() -> str:
    """The CPU model as lscpu names it: what the provenance cell records, and what the stored-output test compares."""
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if ln.startswith("Model name")), "a CPU")


def _provenance(name: str) -> str:
    import timm
    import torch

    import automix_lite

    model = cpu_model()
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (f"{MARK}\n*The outputs below were stored by `python notebooks/render.py {name}` on {date}: {model}, "
            f"{os.cpu_count()} cores, {gpu}, Python {platform.python_version()}, torch {torch.__version__}, timm "
            f"{timm.__version__}, automix_lite {automix_lite.__version__}, real mode (not `AUTOMIX_SMOKE`). "
            "`tests/test_notebook_outputs.py` re-runs it and checks they are still what the code prints.*")


def render(name: str) -> Path:
    path = ROOT / name
    nb = execute(path)
    for cell in nb.cells:  # keep the repository light: small images, no execution timing, no widget state
        cell.metadata.pop("execution", None)
        cell.metadata.pop("render", None)  # the step counts: the test takes them from its own fresh run
        for o in cell.get("outputs", []):
            if "data" in o and "image/png" in o["data"]:
                o["data"]["image/png"] = _small_png(o["data"]["image/png"])
    nb.metadata.pop("widgets", None)
    nb.cells.insert(1, nbformat.v4.new_markdown_cell(_provenance(name)))
    nbformat.write(nb, path)
    return path


def numbers(text: str) -> list[float]:
    """The numbers of an output text, timings and other volatile parts removed."""
    for pattern in VOLATILE:
        text = re.sub(pattern, " ", text)
    return [float(m) for m in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", text)]


def output_texts(nb) -> list[list[str]]:
    """Per code cell (provenance cell excluded), the text of each stream / text output."""
    out = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        texts = []
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream" and o.get("name") == "stdout":
                texts.append(o["text"])
            elif "data" in o and "text/plain" in o["data"] and "image/png" not in o["data"]:
                texts.append(o["data"]["text/plain"])
        out.append(texts)
    return out


if __name__ == "__main__":
    for name in sys.argv[1:] or list(RENDERED):
        print(f"[render] {name} ...", flush=True)
        print(f"[render] wrote {render(name)}", flush=True)
