"""One prepared GPU benchmark that fits one 10-minute run: step times, train() throughput, a resumable accuracy run.

AutoMix: Liu, Li et al., "AutoMix: Unveiling the Power of Mixup for Stronger Classifiers", ECCV 2022,
arXiv:2103.13027. Everything goes through the library's public API (``AutoMix``, ``mix``, ``train``).

Sections (``--sections``, default all four, each skipped with a note when ``--budget-s`` runs out):

* ``step`` -- one training step (forward, loss, backward, SGD step; AutoMix also its momentum update) on a fixed
  random batch, 100 classes, for vanilla / MixUp / CutMix / AutoMix: ``resnet18_cifar`` at batch 100, 128, 256
  (32 px) and ``resnet50`` at 224 px, batch 64. On CUDA: bf16 autocast (fp16 + GradScaler before compute
  capability 8) and channels-last, no synchronisation inside the step, the mean of ``--steps`` back-to-back steps
  after ``--warmup`` (one ``torch.cuda.synchronize`` before and after the timed block), peak memory. Paths:
  ``eager`` (AutoMix's two online passes run separately), ``fused`` (``online_pass="fused"``,
  ``automix_lite.fast.step``) and ``graph`` (the CUDA-graph step of ``automix_lite.fast.graphed``, over the fused
  pass); a path that does not apply is reported as ``n/a`` with the reason (section code: ``gpu_step.py``).
* ``loader`` -- the train loader alone (``cifar10`` preset, batch 100): the ``DataLoader`` pipeline with
  ``--workers`` vs the data on the device, images/s over ``--loader-s`` seconds, decoding time apart.
* ``train`` -- ``train()`` with the ``cifar10`` preset on the CIFAR-10 JPEG folder, vanilla and AutoMix, with the
  ``DataLoader`` pipeline (``--workers``) and with the data on the device; images/s of each epoch's training
  time (evaluation excluded) and the wall time including decoding.
* ``accuracy`` -- the ``cifar10`` preset (ResNet-18, 200 epochs by default), vanilla vs MixUp vs AutoMix, one run
  folder each under ``--runs-dir``. Each invocation continues the unfinished runs from their checkpoints (train's
  resume) and stops them cleanly, with a resumable checkpoint, before the time budget ends; when every run is
  done the summary table gives, per method and head, the final top-1 and the median of the last 10 epochs.

Data: ``--data-dir`` (a folder with ``train/<class>/`` and ``test/<class>/``), else the archive ``--archive``
(default: the shared CIFAR-10 JPEG archive next to the repository), unpacked once into ``--cache``.
``--device cpu --quick`` runs every section tiny (``resnet_tiny_cifar``, a synthetic 10-class folder unless
``--data-dir`` is given) in well under a minute; CI runs it (``tests/test_benchmarks.py``).

Results: ``<out>/gpu_<device>[_quick].json`` (provenance: hardware, versions, command, seed, git commit; every
measurement) and ``.md`` (tables), rewritten after every section so a stopped run keeps what it measured;
sections from earlier invocations are kept.

Example (one GPU, one 10-minute slot; run it again to continue the accuracy runs)::

    python benchmarks/gpu.py --budget-s 540
    python benchmarks/gpu.py --sections accuracy --budget-s 540
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see speed.py

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: import the sibling harnesses

from automix_lite import TrainConfig, train  # noqa: E402

from accuracy import DEFAULT_ARCHIVE, unpack_cifar  # noqa: E402
from gpu_common import REPO, Budget, NotAvailable, _free, _sync, git_info  # noqa: E402,F401
from gpu_step import PATHS, QUICK_STEP_CONFIGS, STEP_CONFIGS, step_markdown, step_section  # noqa: E402,F401
from provenance import provenance  # noqa: E402

DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "automix-lite"
ACC_METHODS = ("vanilla", "mixup", "automix")


# ----------------------------------------------------------------------------- data
def synthetic_cifar(root: Path, per_class: int = 12, test_per_class: int = 4) -> Path:
    """A 10-class, 32 px PNG folder in the CIFAR layout (``--quick`` without ``--data-dir``)."""
    from PIL import Image

    if (root / "train").is_dir() and (root / "test").is_dir():
        return root
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", test_per_class)):
        for c in range(10):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = np.full((32, 32, 3), 25 * c, dtype=np.int16) + rng.integers(-20, 21, (32, 32, 3))
                Image.fromarray(base.clip(0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return root


def data_folder(args) -> Path:
    if args.data_dir:
        return Path(args.data_dir)
    if args.quick:
        return synthetic_cifar(Path(args.cache) / "synthetic_cifar10")
    archive = Path(args.archive)
    if not archive.is_file():
        raise SystemExit(f"CIFAR-10 archive {archive} not found: pass --data-dir (train/ and test/ class folders) "
                         "or --archive")
    return unpack_cifar(archive, Path(args.cache) / "cifar10_jpg")


def cifar_config(args, dev: torch.device, data_dir: Path, **kw) -> TrainConfig:
    """The ``cifar10`` preset on ``data_dir`` (``--quick``: a tiny model, subset and batch)."""
    base = dict(data_dir=str(data_dir), device=str(dev), seed=args.seed, workers=args.workers, log_every=10**9,
                num_classes=10)
    if args.quick:
        base.update(model="resnet_tiny_cifar", img_size=16, train_subset=64, val_subset=32, batch_size=16,
                    median_last_k=1)
    return TrainConfig.preset("cifar10", **{**base, **kw})


# ----------------------------------------------------------------------------- (b0) the loader alone
def loader_section(args, budget: Budget, dev: torch.device, data_dir: Path, log) -> dict:
    """Images/s of the train loader alone (augmented, normalised batches on the device), ``cifar10`` preset:
    the DataLoader pipeline with ``--workers`` vs the data on the device (decoding time reported apart)."""
    from automix_lite.trainer.data import build_loaders

    runs = []
    for name, on_device in (("dataloader", False), ("device", True)):
        if budget.left() < args.reserve_s + (2 if args.quick else 30):
            runs.append({"variant": name, "na": "skipped: time budget spent"})
            continue
        cfg = cifar_config(args, dev, data_dir, data_on_device=on_device)
        t0 = time.time()
        loader, _, sampler, _ = build_loaders(cfg, device=dev)
        build_s = time.time() - t0
        sampler.set_epoch(0)
        batches = iter(loader)
        next(batches)  # worker start-up / the epoch's index and parameter transfer
        n, t0 = 0, time.perf_counter()
        for x, _ in batches:
            x = x.to(dev, non_blocking=True)
            n += x.shape[0]
            if time.perf_counter() - t0 > args.loader_s:
                break
        _sync(dev)
        dt = time.perf_counter() - t0
        runs.append({"variant": name, "img_s": n / dt if n else 0.0, "images": n, "build_s": build_s,
                     "workers": cfg.workers, "batch_size": cfg.batch_size})
        log(f"[loader] {name:10s} {runs[-1]['img_s']:9.0f} img/s  (build/decode {build_s:.1f} s)")
        del loader, batches
        _free(dev)
    return {"runs": runs}


def loader_markdown(sec: dict) -> str:
    lines = ["| data | img/s | workers | build / decode (s) |", "|---|---:|---:|---:|"]
    for r in sec["runs"]:
        lines.append(f"| {r['variant']} | n/a ({r['na']}) | | |" if "na" in r else
                     f"| {r['variant']} | {r['img_s']:,.0f} | {r['workers']} | {r['build_s']:.1f} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- (b) train() throughput
def graph_field() -> str | None:
    """A boolean ``TrainConfig`` switch for the CUDA-graph step, if this commit has one."""
    return next((f.name for f in dataclasses.fields(TrainConfig) if "graph" in f.name and f.type in (bool, "bool")),
                None)


def train_variants(method: str, dev: torch.device) -> list[tuple[str, dict]]:
    """The train() variants of one method: DataLoader, data on the device, and on CUDA the graphed step
    (AutoMix only: ``cuda_graph`` graphs the AutoMix step and refuses every other method)."""
    variants = [("dataloader", {"data_on_device": False}), ("device", {"data_on_device": True})]
    if graph_field() and dev.type == "cuda" and method == "automix":
        variants.append(("device+graph", {"data_on_device": True, graph_field(): True}))
    return variants


def train_section(args, budget: Budget, dev: torch.device, data_dir: Path, log) -> dict:
    """train() images/s, vanilla and AutoMix, DataLoader vs data on the device (and the graph switch, if any)."""
    runs = []
    for method in ("vanilla", "automix"):
        for name, kw in train_variants(method, dev):
            if budget.left() < args.reserve_s + (5 if args.quick else 60):
                runs.append({"method": method, "variant": name, "na": "skipped: time budget spent"})
                continue
            out = Path(args.runs_dir) / f"throughput_{method}_{name}"
            t0 = time.time()
            try:  # the config too: a variant this commit refuses is recorded, not fatal
                cfg = cifar_config(args, dev, data_dir, method=method, epochs=args.train_epochs, out=str(out),
                                   eval_every=args.train_epochs, keep_checkpoints=1, **kw)
                res = train(cfg)
            except Exception as e:  # noqa: BLE001 - recorded; the other variants still run
                runs.append({"method": method, "variant": name, "na": f"error: {type(e).__name__}: {e}"})
                log(f"[train] {method} {name}: {runs[-1]['na']}")
                continue
            wall = time.time() - t0
            steps = res.history[0]["step"]  # steps per epoch
            ips = [steps * cfg.batch_size / h["time"] for h in res.history]
            runs.append({"method": method, "variant": name, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
                         "steps_per_epoch": steps, "workers": cfg.workers, "img_s_per_epoch": ips,
                         "img_s_last_epoch": ips[-1], "epoch_time_s": [h["time"] for h in res.history],
                         "wall_s": wall, "config": cfg.to_dict()})
            log(f"[train] {method:8s} {name:12s} {ips[-1]:9.0f} img/s (last epoch), wall {wall:.1f} s")
            _free(dev)
    return {"runs": runs}


def train_markdown(sec: dict) -> str:
    lines = ["| method | data | img/s (last epoch) | epoch times (s) | wall incl. decoding (s) |",
             "|---|---|---:|---|---:|"]
    for r in sec["runs"]:
        if "na" in r:
            lines.append(f"| {r['method']} | {r['variant']} | n/a ({r['na']}) | | |")
        else:
            times = ", ".join(f"{t:.1f}" for t in r["epoch_time_s"])
            lines.append(f"| {r['method']} | {r['variant']} | {r['img_s_last_epoch']:,.0f} | {times} | "
                         f"{r['wall_s']:.1f} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- (c) resumable accuracy run
class StopBefore:
    """A train() callback that stops the run cleanly (KeyboardInterrupt after a finished step, so train() writes
    a resumable checkpoint) once ``deadline`` (time.time()) passes or after ``max_steps`` steps of this call."""

    def __init__(self, deadline: float, max_steps: int | None = None):
        self.deadline, self.max_steps, self.steps, self.fired = deadline, max_steps, 0, False

    def on_step_end(self, state) -> None:
        self.steps += 1
        if time.time() > self.deadline or (self.max_steps is not None and self.steps >= self.max_steps):
            self.fired = True
            raise KeyboardInterrupt("benchmarks/gpu.py: time budget reached")


def _epochs_done(out: Path) -> int:
    f = out / "metrics.jsonl"
    return len(f.read_text().splitlines()) if f.is_file() else 0


def accuracy_section(args, budget: Budget, dev: torch.device, data_dir: Path, log) -> dict:
    """Continue every unfinished run until the budget; the summary once all are done."""
    deadline = budget.start + budget.seconds - args.reserve_s
    status = {}
    for method in ACC_METHODS:
        out = Path(args.runs_dir) / f"cifar10_{method}_e{args.acc_epochs}_s{args.seed}"
        cfg = cifar_config(args, dev, data_dir, method=method, epochs=args.acc_epochs, out=str(out),
                           data_on_device="auto", keep_checkpoints=2)
        if (out / "metrics.json").is_file():
            status[method] = {"state": "done", "epochs": _epochs_done(out), "out": str(out)}
            continue
        if deadline - time.time() < (5 if args.quick else 60):
            status[method] = {"state": "pending", "epochs": _epochs_done(out), "out": str(out)}
            continue
        resume = str(out) if any(out.glob("checkpoint*.pt")) else None
        stop = StopBefore(deadline, args.stop_after_steps)
        log(f"[accuracy] {method}: {'resuming at epoch ' + str(_epochs_done(out)) if resume else 'starting'}")
        try:
            train(cfg.replace(resume=resume), callbacks=[stop])
            status[method] = {"state": "done", "epochs": _epochs_done(out), "out": str(out)}
        except KeyboardInterrupt:
            if not stop.fired:
                raise
            status[method] = {"state": "paused", "epochs": _epochs_done(out), "out": str(out)}
            log(f"[accuracy] {method}: paused after epoch {_epochs_done(out)} (resumable checkpoint written)")
        _free(dev)
    sec = {"epochs": args.acc_epochs, "methods": list(ACC_METHODS), "status": status}
    if all(s["state"] == "done" for s in status.values()):
        sec["summary"] = {m: _run_summary(Path(s["out"])) for m, s in status.items()}
    return sec


def _run_summary(out: Path) -> dict:
    m = json.loads((out / "metrics.json").read_text())
    return {"final_top1": m["final_top1"], "median_last_k": m["median_last_k"], "k": m["k"],
            "best_head": m["best_head"], "best_median_top1": m["best_median_top1"], "wall_time_s": m["wall_time_s"]}


def accuracy_markdown(sec: dict) -> str:
    if "summary" not in sec:
        done = ", ".join(f"{m}: {s['state']} ({s['epochs']}/{sec['epochs']} epochs)" for m, s in sec["status"].items())
        return f"Not finished yet: {done}. Run the section again to continue."
    lines = ["| method | head | final top-1 (%) | median of last k epochs (%) |", "|---|---|---:|---:|"]
    for method, s in sec["summary"].items():
        for head, final in s["final_top1"].items():
            best = " (best)" if head == s["best_head"] else ""
            lines.append(f"| {method} | {head}{best} | {final:.2f} | {s['median_last_k'][head]:.2f} |")
    k = next(iter(sec["summary"].values()))["k"]
    return f"k = {k}, {sec['epochs']} epochs.\n\n" + "\n".join(lines)


# ----------------------------------------------------------------------------- results and CLI
SECTIONS = {"step": ("Step time", step_markdown), "loader": ("The train loader alone, CIFAR-10", loader_markdown),
            "train": ("train() throughput on CIFAR-10", train_markdown),
            "accuracy": ("Accuracy, CIFAR-10, cifar10 preset", accuracy_markdown)}


def write_results(result: dict, out: Path, stem: str) -> None:
    """``<stem>.json`` and ``<stem>.md``; the sections of an earlier file that this run did not redo are kept."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{stem}.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    sections = {**old.get("sections", {}), **result["sections"]}
    merged = {**result, "sections": sections}
    path.write_text(json.dumps(merged, indent=1))
    prov = result["provenance"]
    hw, v = prov["hardware"], prov["versions"]
    md = [f"# GPU benchmark ({hw['gpu'] or hw['cpu_model']})", "",
          f"{prov['date_utc']}; torch {v['torch']}, timm {v['timm']}, torchvision {v['torchvision']}, "
          f"automix_lite {v['automix_lite']}; git {prov['git']['commit']}{' (dirty)' if prov['git']['dirty'] else ''};"
          f" seed {prov['seed']}.", f"Command: `{prov['command']}`", ""]
    for key, (title, table) in SECTIONS.items():
        if key in sections:
            s = sections[key]
            md += [f"## {title}", "", f"Measured {s['date_utc']} with `{s['command']}`.", "", table(s), ""]
    (out / f"{stem}.md").write_text("\n".join(md))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    p.add_argument("--budget-s", type=float, default=540.0, help="stop everything cleanly within this many seconds")
    p.add_argument("--reserve-s", type=float, default=None,
                   help="seconds kept free at the end for checkpoints and results (default 30; --quick 1)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="every section tiny (smoke test, CPU, < 1 minute)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per (config, method, path) (default 30)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps before them (default 5)")
    p.add_argument("--loader-s", type=float, default=None, help="seconds of batches per loader (default 10)")
    p.add_argument("--train-epochs", type=int, default=None, help="epochs of each throughput run (default 2)")
    p.add_argument("--acc-epochs", type=int, default=None, help="epochs of each accuracy run (default 200)")
    p.add_argument("--stop-after-steps", type=int, default=None,
                   help="also pause each accuracy run after this many steps of this invocation (testing resume)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (default min(8, CPUs))")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="CIFAR-10 folder with train/ and test/ (skips the archive)")
    p.add_argument("--archive", default=str(DEFAULT_ARCHIVE))
    p.add_argument("--cache", default=str(DEFAULT_CACHE), help="where the archive is unpacked")
    p.add_argument("--runs-dir", default=None, help="run folders (default <cache>/gpu_runs[_quick])")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = p.parse_args(argv)
    q = args.quick
    defaults = dict(reserve_s=1.0 if q else 30.0, steps=2 if q else 30, loader_s=0.5 if q else 10.0, warmup=1 if q else 5,
                    train_epochs=1 if q else 2, acc_epochs=2 if q else 200,
                    workers=0 if q else min(8, os.cpu_count() or 1),
                    runs_dir=str(Path(args.cache) / ("gpu_runs_quick" if q else "gpu_runs")))
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    budget = Budget(args.budget_s)
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available here; use --device cpu (with --quick)")
    command = " ".join(["python", sys.argv[0]] + (sys.argv[1:] if argv is None else list(argv)))
    prov = provenance(dev, args.seed, command.split()[1:])
    prov["git"] = git_info()
    result = {"benchmark": "gpu", "provenance": prov, "settings": vars(args), "sections": {}}
    stem = f"gpu_{dev.type}" + ("_quick" if args.quick else "")
    log = lambda s: print(s, flush=True)  # noqa: E731
    data_dir = data_folder(args) if {"loader", "train", "accuracy"} & set(args.sections) else None
    runners = {"step": lambda: step_section(args, budget, dev, log),
               "loader": lambda: loader_section(args, budget, dev, data_dir, log),
               "train": lambda: train_section(args, budget, dev, data_dir, log),
               "accuracy": lambda: accuracy_section(args, budget, dev, data_dir, log)}
    for key in args.sections:
        log(f"[gpu] section {key}: {budget.left():.0f} s of the budget left")
        sec = runners[key]()
        sec.update(date_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), command=command)
        result["sections"][key] = sec
        write_results(result, Path(args.out), stem)  # after every section: a stopped run keeps what it measured
    log(f"[gpu] wrote {Path(args.out) / (stem + '.json')} and .md ({time.time() - budget.start:.0f} s)")
    return result


if __name__ == "__main__":
    main()
