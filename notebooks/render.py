"""Run the notebooks that finish on a CPU in a few minutes, in their real (non-smoke) mode, and store their outputs,
so GitHub shows every printed number and figure. A second cell says where, when and with what they were made.

    python notebooks/render.py                 # every notebook in RENDERED (about 7 minutes on 2 cores)
    python notebooks/render.py demo.ipynb      # one

``tests/test_notebook_outputs.py`` re-executes them the same way and fails when the stored outputs are no longer
what the code prints (numbers within ``TOLERANCES``; timings are not compared).
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
# notebook -> (relative tolerance, absolute tolerance) for the numbers its outputs print; the trainings (demo,
# 02b) can move by a sample or two on another CPU, the others are deterministic
RENDERED = {"demo.ipynb": (0.05, 1.5), "notebooks/01_mixup_zoo.ipynb": (1e-4, 1e-4),
            "notebooks/02_mix_block.ipynb": (1e-4, 1e-4), "notebooks/02b_the_training_step.ipynb": (0.05, 0.05),
            "notebooks/02c_ablations.ipynb": (1e-4, 1e-4), "notebooks/03_train_automix.ipynb": (0.05, 1.5),
            "notebooks/04_mask_explorer.ipynb": (1e-4, 1e-4), "notebooks/05_scale_to_imagenet.ipynb": (0.05, 1.5)}
MARK = "<!-- rendered-outputs -->"
# what changes from run to run, or between two CPUs, without the code changing: per-epoch progress (a training's
# trajectory differs in the last bits from one CPU's kernels to another's; its end is compared), timings, paths
VOLATILE = [r"(?m)^\[automix_lite\] epoch .*$",  # per-epoch progress of a training: chaotic in the last bits
            r"best head: \w+",  # the best of tied heads can flip between machines
            r"\d+(\.\d+)?\s*(s|ms|min|sec|seconds)\b", r"\b(in|took|done in)\s+\d+(\.\d+)?", r"/tmp/[\w./-]+",
            r"0x[0-9a-f]+", r"\d+(\.\d+)?\s*it/s", r"\d{4}-\d{2}-\d{2}[T ][\d:]+"]


DPI = 72  # figures at 72 dpi, re-encoded with a 128-colour palette: the repository stays light


def kernel_env() -> dict:
    """Real mode: no AUTOMIX_SMOKE; the learner's exercises are checked against the reference solutions."""
    rc = Path(tempfile.mkdtemp(prefix="automix_mplrc_"))
    (rc / "matplotlibrc").write_text(f"figure.dpi: {DPI}\n")
    env = {k: v for k, v in os.environ.items() if k != "AUTOMIX_SMOKE"}
    env.update(AUTOMIX_SOLUTIONS="1", MPLBACKEND="module://matplotlib_inline.backend_inline", MATPLOTLIBRC=str(rc),
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
                                            "PYTHONPATH")}
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
    return nb


def _provenance(name: str) -> str:
    import timm
    import torch

    import automix_lite

    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if ln.startswith("Model name")), "a CPU")
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
