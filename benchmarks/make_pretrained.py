"""Make the model shipped in ``automix_lite/assets/`` (``automix_lite.load_pretrained("quick")``).

Trains the README's main job as typed (``TrainConfig.preset("quick")``, seed 0, digits at 16 px, CPU), then keeps
from its checkpoint only what a model needs (weights, config, classes, channels, input normalisation; no optimizer
or RNG state) and writes a record beside it: command, provenance, final top-1 per head, mask structure::

    python benchmarks/make_pretrained.py            # about 75 s on a 2-core CPU
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import automix_lite  # noqa: F401  (first: OpenMP's wait policy)

# isort: split
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from automix_lite import TrainConfig, train  # noqa: E402
from automix_lite.trainer.checkpoint import load_checkpoint  # noqa: E402
from automix_lite.trainer.pretrained import pretrained_path  # noqa: E402

from provenance import provenance  # noqa: E402

KEEP = ("format", "model", "config", "num_classes", "in_chans", "model_class", "versions", "epoch", "step")


def make(out_dir: Path | None = None, name: str = "quick", argv: list[str] | None = None) -> Path:
    """Train, strip, write ``<asset>.pt`` and ``<asset>.json``; returns the weights' path."""
    work = Path(tempfile.mkdtemp(prefix="automix_pretrained_"))
    cfg = TrainConfig.preset(name, out=str(work / name))
    result = train(cfg, figures=False, progress="off")
    ckpt = load_checkpoint(result.out / "checkpoint.pt")
    small = {k: ckpt[k] for k in KEEP if k in ckpt}
    small["config"] = {**small["config"], "out": f"runs/{name}", "resume": None}
    small["normalisation"] = {"mean": list(result.info.mean), "std": list(result.info.std)}
    target = pretrained_path(name) if out_dir is None else Path(out_dir) / pretrained_path(name).name
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(small, target)
    metrics = result.metrics
    record = {"name": name, "made_by": "python benchmarks/make_pretrained.py",
              "equivalent_command": f"python -m automix_lite train --preset {name} --seed 0",
              "provenance": provenance(torch.device("cpu"), cfg.seed, argv),
              "final_top1": metrics["final_top1"], "diagnostics": metrics["diagnostics"],
              "bytes": target.stat().st_size}
    target.with_suffix(".json").write_text(json.dumps(record, indent=1, default=str))
    return target


if __name__ == "__main__":
    path = make(argv=sys.argv[1:] and [sys.argv[0], *sys.argv[1:]] or None)
    print(f"[make_pretrained] wrote {path} ({path.stat().st_size / 1e6:.2f} MB) and {path.with_suffix('.json').name}")
