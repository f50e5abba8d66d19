"""The checks of ``gpu_accept.py`` (see its docstring for what each proves), in the order they run."""
from __future__ import annotations

import contextlib
import copy
import re
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from gpu_accept_e2e import check_train_e2e, fake_cfg

import automix_lite.fast.step as fast_step
import automix_lite.trainer.fastpaths as fastpaths
from automix_lite import AutoMix, train
from automix_lite.fast import device_data as dd
from automix_lite.fast.graphed import GraphedStep
from automix_lite.fast.runtime import bf16_native, resolve_amp

from gpu_common import REPO, _sync
from gpu_step import time_path

# what amp='auto' must give on GPUs we know (name fragment -> dtype); others: bf16 from compute capability 8.0
KNOWN_AMP = {"T4": torch.float16, "V100": torch.float16, "P100": torch.float16, "A100": torch.bfloat16,
             "H100": torch.bfloat16, "H200": torch.bfloat16, "L4": torch.bfloat16, "A10": torch.bfloat16}


def _result(status: str, **detail) -> dict:
    return {"status": status, **detail}


def _verdict(failed: list[str], **detail) -> dict:
    return _result("FAIL" if failed else "PASS", **({"failed": "; ".join(failed)} if failed else {}), **detail)


def _batch(n: int, size: int, dev, classes: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 3, size, size, generator=g).to(dev), torch.randint(0, classes, (n,), generator=g).to(dev))


def _model(dev, name="resnet_tiny_cifar", **kw) -> AutoMix:
    torch.manual_seed(0)
    return AutoMix(name, 10, **kw).to(dev)


# ----------------------------------------------------------------------------- 1 amp policy
def check_amp_policy(args, dev, budget) -> dict:
    got = resolve_amp("auto", dev)
    if dev.type != "cuda":
        return _verdict([] if got is None else [f"auto is {got} on the CPU, expected off"], auto=str(got))
    name, cap = torch.cuda.get_device_name(dev), torch.cuda.get_device_capability(dev)
    known = [v for k, v in KNOWN_AMP.items() if re.search(rf"\b{k}\b", name)]
    want = known[0] if known else (torch.bfloat16 if cap[0] >= 8 else torch.float16)
    a = torch.randn(64, 64, device=dev)
    with torch.autocast("cuda", dtype=got or torch.float32, enabled=got is not None):
        computed = (a @ a).dtype if got is not None else None
    failed = [f"auto is {got}, expected {want}"] if got != want else []
    failed += [f"autocast matmul computed in {computed}"] if computed != got else []
    return _verdict(failed, gpu=name, capability=f"{cap[0]}.{cap[1]}", auto=str(got), expected=str(want),
                    from_table=bool(known), bf16_native=bf16_native(dev))


# ----------------------------------------------------------------------------- 2 fp32 equality
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


def check_fp32_equality(args, dev, budget) -> dict:
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    real_split = fast_step.per_part_batchnorm
    try:
        sound = [fastpaths.fused_pass_differences(_model(dev), *_batch(8, 16, dev, seed=s)) for s in range(3)]
        fast_step.per_part_batchnorm = lambda *a, **k: contextlib.nullcontext()  # pooled BN: must be caught
        pooled = fastpaths.fused_pass_differences(_model(dev), *_batch(8, 16, dev, seed=0))
        fast_step.per_part_batchnorm = real_split
        worst = _graph_vs_eager(dev, 12 if not args.dry_run else 6)
    finally:
        fast_step.per_part_batchnorm = real_split
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    tol = fastpaths.FUSED_TOLERANCE
    failed = [f"sound fused pass: {k} {d:.2e} > {tol[k]:g}" for s in sound for k, d in s.items() if not d <= tol[k]]
    failed += [f"pooled BatchNorm passed the {k} comparison ({d:.2e})" for k, d in pooled.items() if d <= tol[k]]
    failed += [f"graph vs eager loss {worst:.2e} > 1e-4"] if not worst <= 1e-4 else []
    return _verdict(failed, fused_vs_separate=sound, pooled_bn_mutant=pooled, tolerances=tol,
                    graph_vs_eager_max_rel_loss=worst)


# ----------------------------------------------------------------------------- 4 no host sync
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


def _augmented_loader(dev, n_batches: int = 20, batch: int = 16):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n_batches * batch, 3, 32, 32), dtype=torch.uint8, generator=g).to(dev)
    data = dd.DeviceImages(images, torch.randint(0, 10, (images.shape[0],), generator=g), mean=(0.5,) * 3,
                           std=(0.25,) * 3, in_chans=3, augment=dd.ShiftAugment(pad=4, size=32))
    return dd.DeviceLoader(data, batch, drop_last=True, generator=torch.Generator().manual_seed(1))


def check_no_host_sync(args, dev, budget) -> dict:
    model = _model(dev)
    x, y = _batch(8, 16, dev)
    opt = torch.optim.SGD(model.online_parameters() + model.mix_block_parameters(), lr=0.1, momentum=0.9)
    twin = copy.deepcopy(model)
    graphed = GraphedStep(twin, torch.optim.SGD(twin.online_parameters() + twin.mix_block_parameters(), lr=0.1),
                          total_steps=20, warmup=1)
    g, loader = torch.Generator().manual_seed(0), _augmented_loader(dev)
    for i in range(2):  # the eager warm-up and the capture (which synchronises by design) are not watched
        graphed(x, y, i, g)
    batches = iter(loader)
    next(batches)  # the epoch's set-up draws its parameters on the host once
    before = [p.detach().clone() for p in twin.online_parameters()]
    detector = "n/a on the CPU"
    with _sync_errors(dev):
        for i in range(3):
            out = fast_step.training_step(model, x, y, i, 20, generator=g, check_labels=False, online_pass="fused")
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            opt.step()
        n = 1 + sum(1 for _ in batches)
        for i in range(2, 8):  # replays
            graphed(x, y, i, g)
        if dev.type == "cuda":
            try:
                torch.ones(1, device=dev).item()
                detector = "did not fire"
            except RuntimeError:
                detector = "fired on a deliberate .item()"
    _sync(dev)
    moved = sum(not torch.equal(a, b.detach()) for a, b in zip(before, twin.online_parameters()))
    failed = [f"{n} loader batches, expected 20"] if n != 20 else []
    failed += ["the graphed steps changed no weight"] if moved == 0 else []
    failed += ["the sync detector did not fire on .item()"] if detector == "did not fire" else []
    return _verdict(failed, fused_steps=3, loader_batches=n, graphed_calls=6, params_changed=moved,
                    detector=detector)


# ----------------------------------------------------------------------------- 5 low precision
def check_low_precision(args, dev, budget) -> dict:
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
        grads = [p.grad for p in model.online_parameters() if p.grad is not None]
        rows[str(dtype)] = {"loss": out["loss"].item(), "rel_to_fp32": abs(out["loss"].item() - ref) / abs(ref),
                            "grads_finite": bool(grads) and all(bool(torch.isfinite(g).all()) for g in grads)}
    failed = [f"{k}: {r}" for k, r in rows.items() if not (r["grads_finite"] and r["rel_to_fp32"] < 5e-2)]
    return _verdict(failed, fp32_loss=ref, **rows)


# ----------------------------------------------------------------------------- 6-8
def check_fallback(args, dev, budget) -> dict:
    real_uses, real_features = fastpaths.uses_fused, fast_step.online_features
    fastpaths.uses_fused = lambda mode, device: mode in ("auto", "fused")  # "auto" picks fused here too

    def broken(model, x, x_bb, fused):
        if fused:
            raise NotImplementedError("injected failure of the fused pass")
        return real_features(model, x, x_bb, fused)
    fast_step.online_features = broken
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            metrics = train(fake_cfg(dev, Path(tempfile.mkdtemp()) / "fallback", epochs=1), figures=False,
                            progress="off").metrics
    finally:
        fastpaths.uses_fused, fast_step.online_features = real_uses, real_features
    n = sum(issubclass(w.category, fastpaths.FastPathWarning) for w in caught)
    status = metrics["fast_paths"]["online_pass"]
    failed = [f"{n} FastPathWarnings, expected 1"] if n != 1 else []
    failed += [f"online_pass recorded as {status!r}"] if not status.startswith("off: check failed") else []
    return _verdict(failed, warnings=n, online_pass=status)


def check_cuda_tests(args, dev, budget) -> dict:
    if dev.type != "cuda":
        return _result("SKIP", why="dry run (the CUDA tests skip without a GPU)")
    import subprocess
    import xml.etree.ElementTree as ET

    report = Path(tempfile.mkdtemp()) / "junit.xml"
    files = ("tests/test_graphed.py", "tests/test_nosync.py", "tests/test_device_data.py", "tests/test_fused.py")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider", "-k",
                           "cuda", f"--junitxml={report}", *files], cwd=REPO, capture_output=True, text=True,
                          timeout=max(30, min(300, budget.left() - 10)))
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = [f"pytest exit {proc.returncode}: {proc.stdout[-600:]}"] if proc.returncode != 0 else []
    failed += [f"{counts['skipped']} CUDA tests skipped on a GPU"] if counts["skipped"] else []
    failed += ["no CUDA test ran"] if counts["tests"] - counts["skipped"] < 4 else []
    return _verdict(failed, **counts)


def check_speed_memory(args, dev, budget) -> dict:
    configs = ([("resnet_tiny_cifar", 16, 8)] if args.dry_run else
               [("resnet18_cifar", 32, 128), ("resnet18_cifar", 32, 256)]
               + ([("resnet50", 224, 64)] if torch.cuda.get_device_capability(dev)[0] >= 8 else []))
    rows, failed = [], []
    amp = resolve_amp("auto", dev)
    for model_name, size, batch in configs:
        x, y = _batch(batch, size, dev, classes=100)
        row = {"model": model_name, "img_size": size, "batch": batch, "dtype": str(amp).replace("torch.", "")}
        for path in ("eager", "fused", "graph"):
            if budget.left() < 20:
                row[path] = {"na": "skipped: budget spent"}
                continue
            r = row[path] = time_path("automix", path, model_name, x, y, 100, dev, 0, 2 if args.dry_run else 20,
                                      1 if args.dry_run else 5)
            expected_na = path == "graph" and (dev.type != "cuda" or amp == torch.float16)
            if "na" in r and not expected_na and not r["na"].startswith("skipped"):
                failed.append(f"{model_name} b{batch} {path}: {r['na']}")
            elif "ms" in r and not r["ms"] > 0:
                failed.append(f"{model_name} b{batch} {path}: {r['ms']} ms")
        rows.append(row)
    defaults = _layout_defaults(args, dev, budget, configs[0], failed)
    return _verdict(failed, rows=rows, defaults=defaults)


def _layout_defaults(args, dev, budget, config, failed: list[str]) -> dict:
    """The eager AutoMix step in NCHW, channels-last, and channels-last with ``cudnn.benchmark``: the measurement
    that decides whether the CNN presets should default to them (issue 29, item 8)."""
    model_name, size, batch = config
    x, y = _batch(batch, size, dev, classes=100)
    out, saved = {}, torch.backends.cudnn.benchmark
    try:
        for name, cl, bench in (("nchw", False, False), ("channels_last", True, False),
                                ("channels_last+cudnn.benchmark", True, True)):
            if budget.left() < 15:
                out[name] = {"na": "skipped: budget spent"}
                continue
            torch.backends.cudnn.benchmark = bench
            out[name] = time_path("automix", "eager", model_name, x, y, 100, dev, 0, 2 if args.dry_run else 20,
                                  1 if args.dry_run else 5, channels_last=cl)
            if "na" in out[name] and not out[name]["na"].startswith("skipped"):
                failed.append(f"defaults {name}: {out[name]['na']}")
    finally:
        torch.backends.cudnn.benchmark = saved
    return {"model": model_name, "batch": batch, **out}


CHECKS = {"amp_policy": check_amp_policy, "fp32_equality": check_fp32_equality, "train_e2e": check_train_e2e,
          "no_host_sync": check_no_host_sync, "low_precision": check_low_precision, "fallback": check_fallback,
          "cuda_tests": check_cuda_tests, "speed_memory": check_speed_memory}
# seconds each check may take on a T4 (the slower card), from the work each does; --dry-run scales them by 0.05
ESTIMATE_S = {"amp_policy": 5, "fp32_equality": 30, "train_e2e": 150, "no_host_sync": 20, "low_precision": 15,
              "fallback": 20, "cuda_tests": 90, "speed_memory": 60}
