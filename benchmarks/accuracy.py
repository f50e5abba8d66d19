"""Accuracy at a fixed training budget on real offline data, through the library's own ``train(cfg)``.

AutoMix: Liu, Li et al., "AutoMix: Unveiling the Power of Mixup for Stronger Classifiers", ECCV 2022,
arXiv:2103.13027. Hand-crafted mixers as in ``automix_lite.core.mixing``.

Suites:

* ``digits``: scikit-learn's bundled 8x8 digits (upsampled to 32 px) with 40 % of the TRAIN labels replaced
  by a wrong class, ``TrainConfig.preset("quick", label_noise=0.4, ...)`` (``resnet_tiny_cifar``, 12 epochs,
  EMA momentum 0.95 -> 0.999 because a run has only ~250 steps). Seconds per run; 5 seeds.
* ``cifar10``: the CIFAR-10 JPEG archive ``../shared/data/cifar10_jpg.tar.gz`` (relative to the repository),
  unpacked once into a cache folder outside the repository; a seeded 5,000-image training subset and 2,000
  test images. CPU budget: ``resnet_tiny_cifar`` (not the paper's ResNet-18), the ``cifar10`` preset
  (SGD 0.1, batch 100, alpha 2) with two changes for a short schedule: ``min_lr=0`` and the AutoMix EMA
  momentum 0.99 -> 0.9999 (the preset's 0.999 has a 1,000-step horizon, longer than a whole short run).
  Skipped with a message when the archive is absent.

Each run's record is appended to ``<out>/accuracy_runs.jsonl`` as soon as it finishes; a rerun with the same
settings skips the runs already there, so an interrupted benchmark continues where it stopped. At the end:
``accuracy.json`` (provenance + every run + mean/std), ``accuracy.md`` (mean +- std tables) and
``accuracy.png`` (bar plot with one dot per seed).

Reported number: the final top-1 (%) of the default inference head (``one_k``, the momentum encoder, for
AutoMix; the single head otherwise). The tables add the paper's protocol (docs/evaluation.md): the median top-1 of the
last k epochs of the best head (for AutoMix the max over its four heads; the single head otherwise). The JSON
also keeps every AutoMix head.

Example::

    python benchmarks/accuracy.py --suite digits --seeds 0 1 2 3 4
    python benchmarks/accuracy.py --suite cifar10 --cifar-epochs 15 --cifar-seeds 0 1 2
"""
from __future__ import annotations

import os

# On a shared CPU, OpenMP threads that spin while waiting make a 2-thread step up to 10x slower when other
# processes compete for the cores (measured here). Sleep instead; set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import statistics
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: import the sibling harness

from automix_lite import TrainConfig, train  # noqa: E402

from provenance import provenance  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ARCHIVE = REPO.parent / "shared" / "data" / "cifar10_jpg.tar.gz"
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "automix-lite" / "cifar10_jpg"
DEFAULT_METHODS = ("vanilla", "mixup", "cutmix", "manifoldmix", "automix")
DEFAULT_HEAD = "one_k"  # AutoMix inference head (OpenMixup default)


# ----------------------------------------------------------------------------- data
def unpack_cifar(archive: Path, cache: Path) -> Path:
    """Unpack the CIFAR-10 JPEG archive once into ``cache``; returns the folder holding train/ and test/.

    Args:
        archive: path of ``cifar10_jpg.tar.gz``.
        cache: destination folder (outside the repository).
    """
    if (cache / "train").is_dir() and (cache / "test").is_dir():
        return cache
    cache.mkdir(parents=True, exist_ok=True)
    print(f"[accuracy] unpacking {archive} into {cache} ...", flush=True)
    with tarfile.open(archive) as tar:
        try:
            tar.extractall(cache, filter="data")
        except TypeError:  # Python < 3.12 without the filter argument
            tar.extractall(cache)
    if not (cache / "train").is_dir():
        raise FileNotFoundError(f"{archive} did not contain train/ and test/ folders (unpacked into {cache})")
    return cache


# ----------------------------------------------------------------------------- configs
def digits_config(method: str, seed: int, out: Path, epochs: int | None, quick: bool,
                  img_size: int | None = None) -> TrainConfig:
    kw = dict(label_noise=0.4, method=method, seed=seed, out=str(out), threads=torch.get_num_threads())
    if epochs is not None:
        kw["epochs"] = epochs
    if img_size is not None:
        kw["img_size"] = img_size
    if quick:
        kw.update(epochs=1, train_subset=128, val_subset=64, batch_size=32)
    return TrainConfig.preset("quick", **kw)


def cifar_config(method: str, seed: int, out: Path, data_dir: Path, args) -> TrainConfig:
    kw = dict(dataset="cifar10", data_dir=str(data_dir), model=args.cifar_model, method=method, seed=seed,
              out=str(out), epochs=args.cifar_epochs, train_subset=args.train_subset, val_subset=args.val_subset,
              min_lr=0.0, ema_momentum=args.cifar_ema[0], ema_end_momentum=args.cifar_ema[1], amp="off",
              workers=args.workers, device="cpu", median_last_k=3, log_every=10**6, threads=args.threads)
    if args.quick:
        kw.update(epochs=1, train_subset=200, val_subset=100)
    return TrainConfig.preset("cifar10", **kw)


# ----------------------------------------------------------------------------- running
def run_one(suite: str, cfg: TrainConfig) -> dict:
    """Train one config; returns a flat record (accuracy of the default head, every head, time)."""
    t0 = time.time()
    res = train(cfg)
    m = res.metrics
    final = m["final_top1"]
    head = DEFAULT_HEAD if DEFAULT_HEAD in final else "top1"
    return {"suite": suite, "method": cfg.method, "seed": cfg.seed, "epochs": cfg.epochs, "model": cfg.model,
            "top1": final[head], "head": head, "final_top1_heads": final,
            "median_last_k": m["median_last_k"][head], "median_last_k_heads": m["median_last_k"],
            "best_head": m["best_head"], "best_median_top1": m["best_median_top1"],
            "wall_time_s": time.time() - t0, "config": cfg.to_dict()}


def run_logged(prefix: str, i: int, total: int, label: str, run, log_path: Path) -> dict:
    """Announce run ``i`` of ``total``, train it (``run()`` returns its record), report its top-1 and append the
    record to ``log_path`` at once: what lets an interrupted benchmark resume where it stopped."""
    print(f"[{prefix}] ({i + 1}/{total}) {label} ...", flush=True)
    rec = run()
    print(f"[{prefix}]   top-1 {rec['top1']:.2f} ({rec['head']}), {rec['wall_time_s']:.0f} s", flush=True)
    with open(log_path, "a") as f:
        f.write(json.dumps(rec) + "\n")
    return rec


def _key(rec: dict) -> tuple:
    c = rec["config"]
    return (rec["suite"], c["method"], c["seed"], c["epochs"], c["model"], c.get("train_subset"),
            c.get("val_subset"), c.get("ema_momentum"), c.get("img_size"))


def summarize(records: list[dict]) -> dict:
    """{suite: {method: {mean, std, n, seeds, values}}} of the default-head top-1."""
    out: dict[str, dict] = {}
    for r in records:
        out.setdefault(r["suite"], {}).setdefault(r["method"], []).append(r)
    summary = {}
    for suite, by_method in out.items():
        summary[suite] = {}
        for method, recs in by_method.items():
            vals = [r["top1"] for r in recs]
            summary[suite][method] = {
                "mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                "n": len(vals), "seeds": [r["seed"] for r in recs], "values": vals,
                "mean_best_head_median": statistics.fmean([r["best_median_top1"] for r in recs]),
                "mean_wall_time_s": statistics.fmean([r["wall_time_s"] for r in recs]),
            }
    return summary


def markdown(summary: dict, titles: dict[str, str]) -> str:
    parts = []
    for suite, by_method in summary.items():
        parts += [f"**{titles.get(suite, suite)}**", "",
                  "| method | top-1 (%) mean ± std | seeds | per seed | best head, median of last k (paper "
                  "protocol), mean | s / run |", "|---|---:|---:|---|---:|---:|"]
        best = max(s["mean"] for s in by_method.values())
        for method, s in by_method.items():
            mean = f"{s['mean']:.2f} ± {s['std']:.2f}"
            mean = f"**{mean}**" if s["mean"] == best else mean
            per = ", ".join(f"{v:.1f}" for v in s["values"])
            parts.append(f"| {method} | {mean} | {s['n']} | {per} | {s['mean_best_head_median']:.2f} | "
                         f"{s['mean_wall_time_s']:.0f} |")
        parts.append("")
    return "\n".join(parts)


def bar_plot(summary: dict, titles: dict[str, str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    suites = list(summary)
    fig, axes = plt.subplots(1, len(suites), figsize=(5.5 * len(suites), 4), squeeze=False)
    for ax, suite in zip(axes[0], suites):
        methods = list(summary[suite])
        means = [summary[suite][m]["mean"] for m in methods]
        stds = [summary[suite][m]["std"] for m in methods]
        colors = ["tab:red" if m == "automix" else "tab:gray" if m == "vanilla" else "tab:blue" for m in methods]
        ax.bar(range(len(methods)), means, yerr=stds, capsize=4, color=colors, alpha=0.8)
        for i, m in enumerate(methods):
            vals = summary[suite][m]["values"]
            ax.scatter([i] * len(vals), vals, s=10, color="black", zorder=3)
        lo = min(min(summary[suite][m]["values"]) for m in methods)
        ax.set_ylim(max(0.0, lo - 5), min(100.0, max(means) + max(stds) + 3))
        ax.set_xticks(range(len(methods)), methods, rotation=30)
        ax.set_ylabel("top-1 (%)")
        ax.set_title("\n".join(textwrap.wrap(titles.get(suite, suite), 60)), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", nargs="+", choices=("digits", "cifar10"), default=["digits", "cifar10"])
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="digits seeds")
    p.add_argument("--digits-epochs", type=int, default=None, help="default: the quick preset's 12")
    p.add_argument("--digits-img-size", type=int, default=None, help="default: the quick preset's 32 px")
    p.add_argument("--cifar-seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--cifar-methods", nargs="+", default=None, help="default: --methods")
    p.add_argument("--cifar-epochs", type=int, default=50)
    p.add_argument("--cifar-model", default="resnet_tiny_cifar")
    p.add_argument("--cifar-ema", nargs=2, type=float, default=[0.99, 0.9999], metavar=("START", "END"),
                   help="AutoMix EMA momentum schedule for the short CIFAR runs")
    p.add_argument("--train-subset", type=int, default=5000)
    p.add_argument("--val-subset", type=int, default=2000)
    p.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the archive is unpacked")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers for CIFAR")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--runs-dir", type=Path, default=None,
                   help="train() output folders (default: <cache parent>/bench_runs)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--tag", default="accuracy", help="file name stem of the outputs")
    p.add_argument("--quick", action="store_true", help="smoke mode: 1 epoch on a few samples")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    runs_dir = args.runs_dir or (args.cache.parent / "bench_runs")
    log_path = args.out / f"{args.tag}_runs.jsonl"
    done = _logged(log_path)
    titles, skipped = {}, []
    plan = _digits_plan(args, runs_dir, titles) + _cifar_plan(args, runs_dir, titles, skipped)
    records = []
    for i, (suite, make) in enumerate(plan):
        cfg = make()
        stub = {"suite": suite, "config": cfg.to_dict()}
        if _key(stub) in done:
            records.append(done[_key(stub)])
            continue
        records.append(run_logged("accuracy", i, len(plan), f"{suite} {cfg.method} seed {cfg.seed}",
                                  lambda: run_one(suite, cfg), log_path))
    return _write_results(args, argv, records, titles, skipped)


def _logged(log_path: Path) -> dict:
    """The runs already in the log, by key (what a resumed invocation skips)."""
    done = {}
    if log_path.exists():
        for line in log_path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                done[_key(rec)] = rec
    return done


def _digits_plan(args, runs_dir: Path, titles: dict) -> list:
    if "digits" not in args.suite:
        return []
    ep = 1 if args.quick else (args.digits_epochs or TrainConfig.preset("quick").epochs)
    px = args.digits_img_size or TrainConfig.preset("quick").img_size
    titles["digits"] = (f"digits, 40% label noise, resnet_tiny_cifar, {px} px, {ep} epochs, "
                        f"{len(args.seeds)} seeds (final top-1 on clean test labels)")
    return [("digits", lambda m=m, seed=seed: digits_config(m, seed, runs_dir / f"digits_{m}_s{seed}",
                                                            args.digits_epochs, args.quick, args.digits_img_size))
            for seed in args.seeds for m in args.methods]


def _cifar_plan(args, runs_dir: Path, titles: dict, skipped: list) -> list:
    if "cifar10" not in args.suite:
        return []
    if not args.archive.exists() and not (args.cache / "train").is_dir():
        msg = f"CIFAR-10 skipped: archive {args.archive} not found (and no unpacked copy in {args.cache})."
        print(f"[accuracy] {msg}", flush=True)
        skipped.append(msg)
        return []
    data_dir = unpack_cifar(args.archive, args.cache)
    probe = cifar_config("vanilla", 0, runs_dir, data_dir, args)
    titles["cifar10"] = (f"CIFAR-10 (JPEG), {probe.train_subset} train / {probe.val_subset} test images, "
                         f"{args.cifar_model}, {probe.epochs} epochs, {len(args.cifar_seeds)} seeds")
    return [("cifar10", lambda m=m, seed=seed: cifar_config(m, seed, runs_dir / f"cifar10_{m}_s{seed}", data_dir,
                                                            args))
            for seed in args.cifar_seeds for m in (args.cifar_methods or args.methods)]


def _write_results(args, argv, records: list, titles: dict, skipped: list) -> dict:
    """``<tag>.json`` (provenance, settings, summary, every run), ``<tag>.md`` and the bar plot."""
    summary = summarize(records)
    cmd_argv = None if argv is None else [sys.argv[0]] + list(argv)
    result = {"benchmark": "accuracy", "provenance": provenance(torch.device("cpu"), args.seeds[0], cmd_argv),
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "reported_head": DEFAULT_HEAD + " for automix, top1 otherwise (final epoch)",
              "titles": titles, "skipped": skipped, "summary": summary, "runs": records}
    result["provenance"]["seeds"] = {"digits": args.seeds, "cifar10": args.cifar_seeds}
    (args.out / f"{args.tag}.json").write_text(json.dumps(result, indent=1))
    md = (f"Provenance: {result['provenance']['hardware']['cpu_model']}, "
          f"{result['provenance']['hardware']['torch_threads']} threads, torch "
          f"{result['provenance']['versions']['torch']}, {result['provenance']['date_utc']}.\n"
          f"Command: `{result['provenance']['command']}`\n\n" + markdown(summary, titles)
          + "".join(f"\n{s}\n" for s in skipped))
    (args.out / f"{args.tag}.md").write_text(md)
    if summary:
        bar_plot(summary, titles, args.out / f"{args.tag}.png")
    print(md)
    return result


if __name__ == "__main__":
    main()
