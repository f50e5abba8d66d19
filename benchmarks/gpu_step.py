"""Section (a) of ``benchmarks/gpu.py``: one training step's time and peak memory per method and path (eager,
fused online pass, CUDA graph) on a fixed random batch. See ``gpu.py`` for the protocol.
"""
from __future__ import annotations

import time

import torch

from automix_lite.fast.runtime import resolve_amp

from gpu_common import Budget, NotAvailable, _free, _sync
from speed import make_runner

STEP_METHODS = ("vanilla", "mixup", "cutmix", "automix")
STEP_CONFIGS = (("resnet18_cifar", 32, 100), ("resnet18_cifar", 32, 128), ("resnet18_cifar", 32, 256),
                ("resnet50", 224, 64))
QUICK_STEP_CONFIGS = (("resnet_tiny_cifar", 16, 8),)
PATHS = ("eager", "fused", "graph")


def graph_step(runner, method: str, x: torch.Tensor, y: torch.Tensor, total_steps: int, dev: torch.device):
    """The CUDA-graph step of ``automix_lite.fast.graphed`` for this runner's model and optimizer, as ``step(i)``.

    Expected API: ``graphed.graphed_step(model, optimizer, x, y, *, method, total_steps)`` returning a callable
    ``step(i)``; anything else raises ``NotAvailable`` with the reason.
    """
    if dev.type != "cuda":
        raise NotAvailable("CUDA graphs need a CUDA device")
    try:
        from automix_lite.fast import graphed
    except ImportError as e:
        raise NotAvailable(f"automix_lite.fast.graphed is not on this commit ({e})") from e
    make = getattr(graphed, "graphed_step", None)
    if make is None:
        raise NotAvailable("automix_lite.fast.graphed has no graphed_step(model, optimizer, x, y, *, method, total_steps)")
    try:
        return make(runner.model, runner.optimizer, x, y, method=method, total_steps=total_steps)
    except (TypeError, ValueError, NotImplementedError) as e:
        raise NotAvailable(f"graphed_step refused this configuration: {e}") from e


def time_path(method: str, path: str, model_name: str, x: torch.Tensor, y: torch.Tensor, num_classes: int,
              dev: torch.device, seed: int, steps: int, warmup: int, channels_last: bool | None = None) -> dict:
    """Mean step time of ``method`` on ``path``: ``{"ms", "img_s", "dtype", "peak_mem_mb"}`` or ``{"na": reason}``
    (the graph path follows the same autocast policy; where that is fp16, a T4, it is n/a: fp16 eager instead)."""
    # AutoMix: eager = the two online passes run separately; fused and graph (on top of fused) the fast paths
    online_pass = "separate" if path == "eager" else "fused"
    if path == "fused" and method != "automix":
        return {"na": "the fused online pass is AutoMix's (other methods have one pass)"}
    total = warmup + steps
    runner = None
    try:
        channels_last = dev.type == "cuda" if channels_last is None else channels_last
        runner = make_runner(method, model_name, x, y, num_classes, dev, seed, total, time_mix=False,
                             channels_last=channels_last, online_pass=online_pass)
        # the graph gets the batch in the model's memory format too (the eager runner converts its own copy)
        xg = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        step = runner.step if path != "graph" else graph_step(runner, method, xg, y, total, dev)
        for i in range(warmup):
            step(i)
        _sync(dev)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        t0 = time.perf_counter()
        for i in range(warmup, total):
            step(i)
        _sync(dev)
        dt = time.perf_counter() - t0
    except NotAvailable as e:
        return {"na": str(e)}
    except Exception as e:  # noqa: BLE001 - one failing path (e.g. out of memory) must not end a timed slot
        return {"na": f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
    finally:
        del runner
        _free(dev)
    res = {"ms": 1e3 * dt / steps, "img_s": x.shape[0] * steps / dt,
           "dtype": str(resolve_amp("auto", dev) or "float32").replace("torch.", "")}  # what it really ran in
    if dev.type == "cuda":
        res["peak_mem_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return res


def step_section(args, budget: Budget, dev: torch.device, log) -> dict:
    """Every (model, batch) x method x path of the step table, with ratios to vanilla."""
    configs = QUICK_STEP_CONFIGS if args.quick else STEP_CONFIGS
    rows = []
    for model_name, img, batch in configs:
        g = torch.Generator().manual_seed(args.seed)
        x = torch.randn(batch, 3, img, img, generator=g).to(dev)  # [N, 3, S, S]
        y = torch.randint(100, (batch,), generator=g).to(dev)  # [N]
        for method in STEP_METHODS:
            row = {"model": model_name, "img_size": img, "batch": batch, "method": method}
            for path in PATHS:
                if budget.left() < args.reserve_s:
                    row[path] = {"na": "skipped: time budget spent"}
                    continue
                row[path] = time_path(method, path, model_name, x, y, 100, dev, args.seed, args.steps, args.warmup)
                r = row[path]
                log(f"[step] {model_name} b{batch} {method:8s} {path:6s} " +
                    (f"{r['ms']:8.2f} ms  {r['img_s']:9.0f} img/s" if "ms" in r else f"n/a ({r['na']})"))
            rows.append(row)
        del x, y
        _free(dev)
    _add_ratios(rows)
    return {"rows": rows, "steps": args.steps, "warmup": args.warmup, "num_classes": 100,
            "amp": "bf16/fp16 autocast + channels_last" if dev.type == "cuda" else "off (fp32)"}


def _add_ratios(rows: list[dict]) -> None:
    """``ratio``: time / vanilla eager time of the same (model, batch); ``ratio_same_path``: / vanilla on it."""
    for row in rows:
        van = next(r for r in rows if r["method"] == "vanilla" and (r["model"], r["batch"]) == (row["model"],
                                                                                                  row["batch"]))
        base = van["eager"].get("ms")
        for path in PATHS:
            r = row.get(path, {})
            if "ms" in r and base:
                r["ratio"] = r["ms"] / base
                same = van.get(path, {}).get("ms")
                r["ratio_same_path"] = r["ms"] / same if same else None


def step_markdown(sec: dict) -> str:
    head = "| model, batch | method |" + "".join(f" {p}: ms (img/s) | {p}: x vanilla | {p}: peak MiB |"
                                               for p in PATHS)
    lines = [head, "|---|---|" + "---:|" * (3 * len(PATHS))]
    for row in sec["rows"]:
        cells = []
        for p in PATHS:
            r = row.get(p, {})
            if "ms" not in r:
                cells += ["n/a", "", ""]
                continue
            cells += [f"{r['ms']:.2f} ({r['img_s']:,.0f})", f"{r['ratio']:.2f}" if r.get("ratio") else "",
                      f"{r['peak_mem_mb']:,.0f}" if "peak_mem_mb" in r else ""]
        lines.append(f"| {row['model']} {row['img_size']} px, {row['batch']} | {row['method']} | " + " | ".join(cells)
                     + " |")
    notes = sorted({f"{p}: {row[p]['na']}" for row in sec["rows"] for p in PATHS if "na" in row.get(p, {})})
    return "\n".join(lines) + ("\n\n" + "\n".join(f"- n/a {n}" for n in notes) if notes else "")
