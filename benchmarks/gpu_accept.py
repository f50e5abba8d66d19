"""The fast paths' acceptance on a real GPU, in one offline script (<= 8 minutes on one GPU; shorter on a T4).

Checks, each PASS / FAIL / SKIP with its numbers (exit status 1 on any FAIL):

1. ``amp_policy``: ``amp='auto'`` is bf16 exactly where the GPU has bf16 tensor cores, else fp16 (a T4).
2. ``cuda_tests``: the repository's CUDA-only tests (graph capture, device loader, no-sync, fused pass).
3. ``no_host_sync``: ``torch.cuda.set_sync_debug_mode("error")`` around the fused step, 20 device-loader batches
   and graphed replays: any host synchronisation raises.
4. ``fp32_equality`` (TF32 off): the fused pass vs the separate passes over 3 steps, and the graphed step vs the
   eager step over 12 steps with ``switch_off``, an lr change and a save / load in the middle.
5. ``low_precision``: bf16 (where native) and fp16 + GradScaler steps are finite and near fp32.
6. ``train_e2e``: ``train()`` for 2 epochs on each path (separate, fused, graph, data on the device), and a run
   stopped after epoch 1 and resumed equals the uninterrupted one.
7. ``speed_memory``: step time and peak memory per path (``gpu_step.time_path``): ResNet-18 CIFAR at batch 128
   and 256, ResNet-50 at 224 px on compute capability >= 8.
8. ``fallback``: a fused pass broken by injection makes ``train()`` fall back with one warning.

``--dry-run`` runs every check tiny on the CPU (graphs run as their eager twins, CUDA-only parts SKIP), so CI
keeps the script from rotting (``tests/test_benchmarks.py``). Results: ``<out>/gpu_accept_<device>.json`` and
``.md`` with provenance. Run on a GPU machine::

    python benchmarks/gpu_accept.py --out benchmarks/results
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see speed.py

import argparse  # noqa: E402
import contextlib  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_common import REPO, _sync  # noqa: E402
from gpu_step import time_path  # noqa: E402
from provenance import provenance  # noqa: E402

import automix_lite.fast.step as fast_step  # noqa: E402
import automix_lite.trainer.fastpaths as fastpaths  # noqa: E402
from automix_lite import AutoMix, TrainConfig, train  # noqa: E402
from automix_lite.fast.graphed import GraphedStep  # noqa: E402
from automix_lite.fast.runtime import bf16_native, resolve_amp  # noqa: E402

CUDA_TESTS = ("tests/test_graphed.py", "tests/test_nosync.py", "tests/test_device_data.py", "tests/test_fused.py")


def _result(status: str, **detail) -> dict:
    return {"status": status, **detail}


def _batch(n: int, size: int, dev, classes: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 3, size, size, generator=g).to(dev), torch.randint(0, classes, (n,), generator=g).to(dev))


def _model(dev, name="resnet_tiny_cifar", **kw) -> AutoMix:
    torch.manual_seed(0)
    return AutoMix(name, 10, **kw).to(dev)


# ----------------------------------------------------------------------------- 1-3
def check_amp_policy(args, dev) -> dict:
    if dev.type != "cuda":
        return _result("PASS" if resolve_amp("auto", dev) is None else "FAIL", auto="off (CPU)")
    cap = torch.cuda.get_device_capability(dev)
    want = torch.bfloat16 if cap[0] >= 8 else torch.float16
    got = resolve_amp("auto", dev)
    return _result("PASS" if got == want and bf16_native(dev) == (cap[0] >= 8) else "FAIL",
                   capability=f"{cap[0]}.{cap[1]}", auto=str(got), bf16_native=bf16_native(dev))


def check_cuda_tests(args, dev) -> dict:
    if args.dry_run:
        return _result("SKIP", why="dry run (the CUDA tests skip without a GPU)")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider",
                           *CUDA_TESTS], cwd=REPO, capture_output=True, text=True, timeout=300)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]
    return _result("PASS" if proc.returncode == 0 else "FAIL", summary=last)


@contextlib.contextmanager
def _sync_errors(dev):
    if dev.type != "cuda":
        yield
        return
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(0)


def check_no_host_sync(args, dev) -> dict:
    model = _model(dev)
    x, y = _batch(8, 16, dev)
    opt = torch.optim.SGD(model.online_parameters() + model.mix_block_parameters(), lr=0.1, momentum=0.9)
    graphed = GraphedStep(copy.deepcopy(model), torch.optim.SGD(model.online_parameters(), lr=0.1), total_steps=20)
    cfg = TrainConfig.preset("quick", dataset="fake", img_size=16, num_classes=10, train_subset=64, val_subset=16,
                             data_on_device=True, device=str(dev), out=tempfile.mkdtemp())
    from automix_lite.trainer.data import build_loaders
    loader = build_loaders(cfg, device=dev)[0]
    g = torch.Generator().manual_seed(0)
    with _sync_errors(dev):
        for i in range(3):
            out = fast_step.training_step(model, x, y, i, 20, generator=g, check_labels=False, online_pass="fused")
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            opt.step()
        batches = sum(1 for _, (bx, _) in zip(range(20), loader))
        for i in range(6):
            graphed(x, y, i, g)
    _sync(dev)
    return _result("PASS", fused_steps=3, loader_batches=batches, graphed_calls=6,
                   mode="set_sync_debug_mode('error')" if dev.type == "cuda" else "dry run: ran without the mode")


# ----------------------------------------------------------------------------- 4-5
def _graph_vs_eager(dev, steps: int) -> float:
    """Largest relative difference of the loss over ``steps`` steps, graphed vs eager, with switch_off, an lr
    change half-way and a save / load of both models at the same point."""
    eager = _model(dev, switch_off=0.5)
    twin = copy.deepcopy(eager)
    opt_e = torch.optim.SGD(eager.online_parameters() + eager.mix_block_parameters(), lr=0.1, momentum=0.9)
    opt_t = torch.optim.SGD(twin.online_parameters() + twin.mix_block_parameters(), lr=0.1, momentum=0.9)
    step_t = GraphedStep(twin, opt_t, total_steps=steps, warmup=2)
    g_e, g_t = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    worst = 0.0
    for i in range(steps):
        if i == steps // 2:
            for opt in (opt_e, opt_t):
                opt.param_groups[0]["lr"] = 0.05
            eager.load_state_dict(copy.deepcopy(eager.state_dict()))
            twin.load_state_dict(copy.deepcopy(twin.state_dict()))  # in place: the graph's addresses stay
        x, y = _batch(8, 16, dev, seed=i)
        out_e = eager.training_step(x, y, i, steps, generator=g_e, check_labels=False)
        opt_e.zero_grad(set_to_none=True)
        out_e["loss"].backward()
        opt_e.step()
        eager.momentum_update(i, steps)
        loss_t = step_t(x, y, i, g_t)["loss"].clone()
        worst = max(worst, float((out_e["loss"].detach() - loss_t).abs() / out_e["loss"].detach().abs()))
    return worst


def check_fp32_equality(args, dev) -> dict:
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        x, y = _batch(8, 32 if not args.dry_run else 16, dev)
        fused = [fastpaths.check_fused_pass(_model(dev), *_batch(8, 16, dev, seed=s)) for s in range(3)]
        worst = _graph_vs_eager(dev, 12 if not args.dry_run else 6)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    ok = all(r is None for r in fused) and worst <= 1e-4
    return _result("PASS" if ok else "FAIL", fused_vs_separate=[r or "agree" for r in fused],
                   graph_vs_eager_max_rel_loss=worst, tolerance=1e-4, batch=tuple(x.shape))


def check_low_precision(args, dev) -> dict:
    if dev.type != "cuda":
        return _result("SKIP", why="autocast dtypes need CUDA")
    x, y = _batch(16, 32, dev)
    ref = fast_step.training_step(_model(dev), x, y, generator=torch.Generator().manual_seed(0))["loss"].item()
    rows = {}
    for dtype in [torch.float16] + ([torch.bfloat16] if bf16_native(dev) else []):
        model = _model(dev)
        scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
        with torch.autocast("cuda", dtype=dtype):
            out = fast_step.training_step(model, x, y, generator=torch.Generator().manual_seed(0),
                                          online_pass="fused")
        scaler.scale(out["loss"]).backward()
        grads_finite = all(bool(torch.isfinite(p.grad).all()) for p in model.online_parameters() if p.grad is not None)
        rows[str(dtype)] = {"loss": out["loss"].item(), "rel_to_fp32": abs(out["loss"].item() - ref) / abs(ref),
                            "grads_finite": grads_finite}
    ok = all(r["grads_finite"] and r["rel_to_fp32"] < 5e-2 for r in rows.values())
    return _result("PASS" if ok else "FAIL", fp32_loss=ref, **rows)


# ----------------------------------------------------------------------------- 6-8
def _fake_cfg(dev, out: Path, **kw) -> TrainConfig:
    base = dict(dataset="fake", img_size=16, num_classes=10, train_subset=64, val_subset=32, epochs=2, batch_size=16,
                device=str(dev), out=str(out))
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


def check_train_e2e(args, dev) -> dict:
    tmp = Path(tempfile.mkdtemp())
    variants = {"separate": dict(online_pass="separate"), "fused": dict(online_pass="fused"),
                "graph": dict(cuda_graph=True, amp="off" if dev.type == "cuda" and not bf16_native(dev) else "auto"),
                "device_data": dict(data_on_device=True)}
    rows = {}
    for name, kw in variants.items():
        full = train(_fake_cfg(dev, tmp / name, **kw), figures=False, progress="off").metrics
        with contextlib.suppress(KeyboardInterrupt):  # stopped mid-run (step 6 of 8), then resumed
            train(_fake_cfg(dev, tmp / f"{name}_resumed", **kw), [_StopAfter(6)], figures=False, progress="off")
        resumed = train(_fake_cfg(dev, tmp / f"{name}_resumed", resume=str(tmp / f"{name}_resumed"), **kw),
                        figures=False, progress="off").metrics
        rows[name] = {"val": full["history"][-1]["val"], "resume_equal": _history(full) == _history(resumed),
                      "fast_paths": full["fast_paths"]}
    return _result("PASS" if all(r["resume_equal"] for r in rows.values()) else "FAIL", **rows)


def check_speed_memory(args, dev) -> dict:
    configs = ([("resnet_tiny_cifar", 16, 8)] if args.dry_run else
               [("resnet18_cifar", 32, 128), ("resnet18_cifar", 32, 256)]
               + ([("resnet50", 224, 64)] if dev.type == "cuda" and torch.cuda.get_device_capability(dev)[0] >= 8
                  else []))
    rows = []
    for model_name, size, batch in configs:
        x, y = _batch(batch, size, dev, classes=100)
        row = {"model": model_name, "img_size": size, "batch": batch,
               "dtype": str(resolve_amp("auto", dev)).replace("torch.", "")}
        for path in ("eager", "fused", "graph"):
            row[path] = time_path("automix", path, model_name, x, y, 100, dev, 0, 2 if args.dry_run else 20,
                                  1 if args.dry_run else 5)
        rows.append(row)
    return _result("PASS", rows=rows)


def check_fallback(args, dev) -> dict:
    real_uses, real_features = fastpaths.uses_fused, fast_step.online_features
    fastpaths.uses_fused = lambda mode, device: mode in ("auto", "fused")  # "auto" picks fused here too

    def broken(model, x, x_bb, fused):
        if fused:
            raise RuntimeError("injected failure of the fused pass")
        return real_features(model, x, x_bb, fused)
    fast_step.online_features = broken
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            metrics = train(_fake_cfg(dev, Path(tempfile.mkdtemp()) / "fallback", epochs=1), figures=False,
                            progress="off").metrics
    finally:
        fastpaths.uses_fused, fast_step.online_features = real_uses, real_features
    n = sum(issubclass(w.category, fastpaths.FastPathWarning) for w in caught)
    ok = n == 1 and metrics["fast_paths"]["online_pass"].startswith("off: check failed")
    return _result("PASS" if ok else "FAIL", warnings=n, online_pass=metrics["fast_paths"]["online_pass"])


CHECKS = {"amp_policy": check_amp_policy, "cuda_tests": check_cuda_tests, "no_host_sync": check_no_host_sync,
          "fp32_equality": check_fp32_equality, "low_precision": check_low_precision, "train_e2e": check_train_e2e,
          "speed_memory": check_speed_memory, "fallback": check_fallback}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="every check tiny on the CPU (what CI runs)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--only", nargs="*", default=None, choices=sorted(CHECKS))
    args = p.parse_args(argv)
    dev = torch.device("cpu") if args.dry_run or not torch.cuda.is_available() else torch.device("cuda", 0)
    results = {}
    for name, check in CHECKS.items():
        if args.only is not None and name not in args.only:
            continue
        t0 = time.time()
        try:
            results[name] = check(args, dev)
        except Exception as e:  # noqa: BLE001 - a crashing check is a FAIL with its reason, the others still run
            results[name] = _result("FAIL", error=f"{type(e).__name__}: {e}")
        results[name]["seconds"] = round(time.time() - t0, 1)
        print(f"[gpu_accept] {name:14s} {results[name]['status']}  ({results[name]['seconds']} s)", flush=True)
    _write(args, dev, results, argv)
    return 1 if any(r["status"] == "FAIL" for r in results.values()) else 0


def _write(args, dev, results: dict, argv) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"gpu_accept_{'dryrun_cpu' if args.dry_run else dev.type}"
    cmd = None if argv is None else [sys.argv[0]] + list(argv)
    doc = {"benchmark": "gpu_accept", "provenance": provenance(dev, 0, cmd), "results": results}
    (args.out / f"{stem}.json").write_text(json.dumps(doc, indent=1, default=str))
    lines = [f"# GPU acceptance ({'dry run on the CPU' if args.dry_run else torch.cuda.get_device_name(dev)})", "",
             f"Provenance: torch {torch.__version__}, {doc['provenance']['date_utc']}, "
             f"command `{doc['provenance']['command']}`.", "", "| check | status | seconds |", "|---|---|---|"]
    lines += [f"| {k} | {v['status']} | {v['seconds']} |" for k, v in results.items()]
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
