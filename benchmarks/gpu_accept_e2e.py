"""``gpu_accept.py``'s end-to-end check: ``train()`` on every path, each resumed mid-run, under cuDNN determinism."""
from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import torch

from automix_lite import TrainConfig, train
from automix_lite.fast.runtime import bf16_native


def fake_cfg(dev, out: Path, **kw) -> TrainConfig:
    base = dict(dataset="fake", img_size=16, num_classes=10, train_subset=64, val_subset=32, epochs=2, batch_size=16,
                device=str(dev), out=str(out), workers=0)
    return TrainConfig.preset("quick", **{**base, **kw})


class _StopAfter:
    """Raise KeyboardInterrupt after step ``n`` (what Ctrl-C does): train() writes a resumable checkpoint."""

    def __init__(self, n: int):
        self.n = n

    def on_step_end(self, state):
        if state.step == self.n:
            raise KeyboardInterrupt


def _history(metrics: dict) -> list:
    return [{k: v for k, v in e.items() if k != "time"} for e in metrics["history"]]


def _max_rel_diff(a, b) -> float:
    """Largest relative difference between two nested records of numbers (inf where their structure differs)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return max((_max_rel_diff(a[k], b[k]) for k in a), default=0.0) if a.keys() == b.keys() else float("inf")
    if isinstance(a, list) and isinstance(b, list):
        return max((_max_rel_diff(x, y) for x, y in zip(a, b)), default=0.0) if len(a) == len(b) else float("inf")
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return 0.0 if a == b else abs(a - b) / max(abs(b), 1e-12)
    return 0.0 if a == b else float("inf")


@contextlib.contextmanager
def deterministic():
    """cuDNN's deterministic kernels, no autotuning, torch's deterministic algorithms (warning where an op has
    none: those runs can differ run to run, which the check measures), restored after."""
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[:2]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])


def _variants(dev) -> dict:
    """name -> (config overrides, {fast_paths key: required prefix})."""
    cuda = dev.type == "cuda"
    graph_amp = "off" if cuda and not bf16_native(dev) else "auto"  # the graph has no fp16 (GradScaler)
    v = {"separate": (dict(online_pass="separate"), {"online_pass": "off: online_pass='separate'"}),
         "graph": (dict(cuda_graph=True, amp=graph_amp), {"cuda_graph": "on"}),
         "device_data": (dict(data_on_device=True), {"data_on_device": "on"})}
    if cuda:  # the default path (fp16 on a T4, bf16 on an H100; the checked fused pass; data on the device)
        v = {"default": ({}, {"online_pass": "on (checked", "data_on_device": "on", "amp": ""}), **v,
             "graph_pinned": (dict(cuda_graph=True, amp=graph_amp, data_on_device=False, workers=2),
                              {"cuda_graph": "on", "data_on_device": "off"})}
    else:
        v["fused"] = (dict(online_pass="fused"), {"online_pass": "on"})
    return v


def _one_variant(dev, tmp: Path, name: str, kw: dict, want: dict, dry: bool) -> tuple[dict, list[str]]:
    size = dict(train_subset=32) if dry else {}
    stop = 2 if dry else 6  # mid-epoch 2
    full = train(fake_cfg(dev, tmp / name, **size, **kw), figures=False, progress="off").metrics
    with contextlib.suppress(KeyboardInterrupt):
        train(fake_cfg(dev, tmp / f"{name}_cut", **size, **kw), [_StopAfter(stop)], figures=False, progress="off")
    resumed = train(fake_cfg(dev, tmp / f"{name}_cut", resume=str(tmp / f"{name}_cut"), **size, **kw),
                    figures=False, progress="off").metrics
    repeat = 0.0
    if dev.type == "cuda":  # run-to-run noise where an op has no deterministic kernel
        again = train(fake_cfg(dev, tmp / f"{name}_again", **size, **kw), figures=False, progress="off").metrics
        repeat = _max_rel_diff(_history(again), _history(full))
    diff = _max_rel_diff(_history(resumed), _history(full))
    fp = full["fast_paths"]
    failed = [f"{name}: fast_paths[{k!r}] = {fp.get(k)!r}, expected {p!r}..." for k, p in want.items()
              if not str(fp.get(k, "")).startswith(p) or (k == "amp" and str(fp.get(k, "")).startswith("off"))]
    if not (diff == 0.0 or (0 < repeat and diff <= 10 * repeat)):
        failed.append(f"{name}: resumed run differs by {diff:.2e} (two uninterrupted runs: {repeat:.2e})")
    return {"val": full["history"][-1]["val"], "resume_rel_diff": diff, "repeat_rel_diff": repeat,
            "resume_equal": diff == 0.0, "fast_paths": fp}, failed


def check_train_e2e(args, dev, budget) -> dict:
    tmp = Path(tempfile.mkdtemp())
    rows, failed = {}, []
    with deterministic():
        for name, (kw, want) in _variants(dev).items():
            if budget.left() < 15:
                failed.append(f"{name}: not run, budget spent")
                continue
            rows[name], bad = _one_variant(dev, tmp, name, kw, want, args.dry_run)
            failed += bad
    status = "FAIL" if failed else "PASS"
    return {"status": status, **({"failed": "; ".join(failed)} if failed else {}), **rows}
