"""Show the gain: where does mixing (and AutoMix) beat vanilla training within a learner's CPU budget?

AutoMix: Liu, Li et al., "AutoMix: Unveiling the Power of Mixup for Stronger Classifiers", ECCV 2022,
arXiv:2103.13027. Mixing is a regulariser: its benefit grows with the number of passes over the data and
shrinks when the model under-fits. Short runs on the full data set (the project's earlier CPU tables) hide it.
This study trains every method on *few* images for *many* epochs, several seeds per method, and reports the
final top-1 of each method with a paired comparison over seeds (same seed = same data subset, same init).

Settings (``SETTINGS``): each is a set of ``TrainConfig`` overrides on top of the ``quick`` preset (the
Mix Block on ``layer2`` with a BatchNorm after its query/key conv, EMA 0.95 -> 0.999). Methods use
OpenMixup's CIFAR alphas: MixUp 1.0, CutMix 0.2, AutoMix 2.0 (``METHOD_ALPHA``).

Every finished run is appended to ``<out>/<tag>_runs.jsonl`` (its per-epoch top-1 of every head included),
and a rerun skips the runs already there, so an interrupted study resumes where it stopped. At the end (and
after every run) ``<tag>.json`` / ``<tag>.md`` hold the tables with provenance and ``<tag>.png`` the top-1
over epochs of every method with the seed spread shaded.

Example::

    nice -n 10 python benchmarks/small_data.py --settings digits_200 --seeds 0 1 2 --threads 1
    python benchmarks/small_data.py --quick --out /tmp/sd           # smoke run, < 1 minute
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP (see benchmarks/README.md)

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from automix_lite import TrainConfig, train  # noqa: E402

from accuracy import run_logged  # noqa: E402
from provenance import provenance  # noqa: E402

PRESET_SETTING = "fashion_500"  # the setting that TrainConfig.preset("small_data") trains (tested)
METHOD_ALPHA = {"vanilla": 1.0, "mixup": 1.0, "cutmix": 0.2, "automix": 2.0}  # OpenMixup CIFAR settings
SETTINGS: dict[str, dict] = {
    # 200 of the 1,297 training digits, 200 epochs (7 steps each): vanilla memorises its 200 images.
    "digits_200": dict(dataset="digits", train_subset=200, epochs=200, eval_every=10),
    # 500 Fashion-MNIST training images at 16 px, 120 epochs.
    "fashion_500": dict(dataset="fashion-mnist", img_size=16, train_subset=500, val_subset=2000, epochs=120,
                        eval_every=10),
    # 1,000 CIFAR-10 JPEG images, 32 px, the Mix Block on layer3 (8x8 map), 60 epochs.
    "cifar_1000": dict(dataset="cifar10", img_size=32, train_subset=1000, val_subset=2000, epochs=60,
                       feature_stage=3, eval_every=10),
}


def run_config(setting: str, method: str, seed: int, runs_dir: Path, data_dir: Path | None,
               quick: bool) -> TrainConfig:
    """The ``TrainConfig`` of one run of the study."""
    kw = dict(SETTINGS[setting], method=method, seed=seed, alpha=METHOD_ALPHA[method],
              out=str(runs_dir / f"{setting}_{method}_s{seed}"), log_every=10**6, median_last_k=3)
    if kw["dataset"] == "cifar10":
        kw["data_dir"] = str(data_dir)
    if quick:
        kw.update(epochs=2, train_subset=64, val_subset=64, eval_every=1)
    return TrainConfig.preset("quick", **kw)


def run_one(setting: str, cfg: TrainConfig) -> dict:
    """Train one config; a flat record with the final top-1 of the default head and every head's curve."""
    t0 = time.time()
    res = train(cfg, figures=False, progress="off")
    m = res.metrics
    head = "one_k" if "one_k" in m["final_top1"] else "top1"
    curves = {h: [[r["epoch"], r["val"][h]] for r in res.history if r.get("val")] for h in m["final_top1"]}
    return {"setting": setting, "method": cfg.method, "seed": cfg.seed, "head": head,
            "top1": m["final_top1"][head], "final_top1_heads": m["final_top1"],
            "best_head": m["best_head"], "best_median_top1": m["best_median_top1"], "curves": curves,
            "wall_time_s": time.time() - t0, "config": cfg.to_dict()}


def _key(setting: str, cfg: dict) -> tuple:
    return (setting, cfg["method"], cfg["seed"], cfg["epochs"], cfg.get("train_subset"), cfg.get("img_size"),
            cfg["dataset"], cfg["alpha"])


def paired(a: list[float], b: list[float]) -> dict:
    """Paired difference a - b over seeds: mean, sample std, how many seeds a wins, and a t statistic."""
    d = [x - y for x, y in zip(a, b, strict=True)]
    mean = statistics.fmean(d)
    sd = statistics.stdev(d) if len(d) > 1 else 0.0
    t = mean / (sd / len(d) ** 0.5) if sd > 0 else float("inf") if mean else 0.0
    return {"mean_diff": mean, "std_diff": sd, "wins": sum(x > 0 for x in d), "n": len(d), "t": t}


def summarize(records: list[dict]) -> dict:
    """{setting: {"methods": {m: stats}, "vs_vanilla": {m: paired}, "automix_vs": {m: paired}}}."""
    out: dict = {}
    for setting in dict.fromkeys(r["setting"] for r in records):
        by_m: dict[str, dict[int, float]] = {}
        for r in records:
            if r["setting"] == setting:
                by_m.setdefault(r["method"], {})[r["seed"]] = r["top1"]
        stats = {m: {"mean": statistics.fmean(v.values()), "n": len(v),
                     "std": statistics.stdev(v.values()) if len(v) > 1 else 0.0, "per_seed": v}
                 for m, v in by_m.items()}

        def cmp(a: str, b: str) -> dict | None:
            seeds = sorted(set(by_m.get(a, {})) & set(by_m.get(b, {})))
            return paired([by_m[a][s] for s in seeds], [by_m[b][s] for s in seeds]) if seeds else None
        out[setting] = {"methods": stats,
                        "vs_vanilla": {m: cmp(m, "vanilla") for m in by_m if m != "vanilla"},
                        "automix_vs": {m: cmp("automix", m) for m in by_m if m not in ("automix", "vanilla")}}
    return out


def markdown(summary: dict, prov: dict) -> str:
    lines = [f"Provenance: {prov['hardware']['cpu_model']}, {prov['hardware']['torch_threads']} torch thread(s), "
             f"torch {prov['versions']['torch']}, timm {prov['versions']['timm']}, {prov['date_utc']}.",
             f"Command: `{prov['command']}`", "",
             "Reported: final-epoch top-1 (%) of the default head (`one_k`, the momentum encoder, for AutoMix). "
             "Paired: the mean ± std over seeds of the per-seed difference (same seed = same subset and init), "
             "wins = seeds where the first method is higher.", ""]
    for setting, s in summary.items():
        lines += [f"**{setting}**: `{json.dumps(SETTINGS.get(setting, {}))}`", "",
                  "| method | top-1 mean ± std | per seed | paired vs vanilla (wins) |", "|---|---:|---|---:|"]
        for m, st in s["methods"].items():
            per = ", ".join(f"{v:.1f}" for _, v in sorted(st["per_seed"].items()))
            pv = s["vs_vanilla"].get(m)
            pvs = f"{pv['mean_diff']:+.2f} ± {pv['std_diff']:.2f} ({pv['wins']}/{pv['n']})" if pv else "—"
            lines.append(f"| {m} | {st['mean']:.2f} ± {st['std']:.2f} | {per} | {pvs} |")
        for m, pv in s["automix_vs"].items():
            if pv:
                lines.append(f"\nAutoMix − {m}, paired: {pv['mean_diff']:+.2f} ± {pv['std_diff']:.2f} "
                             f"(AutoMix higher on {pv['wins']}/{pv['n']} seeds)")
        lines.append("")
    return "\n".join(lines)


def curve_plot(records: list[dict], path: Path) -> None:
    """Top-1 over epochs per setting, one line per method (mean over seeds), the seed range shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    settings = list(dict.fromkeys(r["setting"] for r in records))
    fig, axes = plt.subplots(1, len(settings), figsize=(4.5 * len(settings), 3.4), squeeze=False)
    colors = {"vanilla": "tab:gray", "mixup": "tab:blue", "cutmix": "tab:green", "automix": "tab:red"}
    for ax, setting in zip(axes[0], settings, strict=True):
        for method in METHOD_ALPHA:
            runs = [r for r in records if r["setting"] == setting and r["method"] == method]
            if not runs:
                continue
            ep = torch.tensor([e for e, _ in runs[0]["curves"][runs[0]["head"]]], dtype=torch.float64)
            ys = torch.tensor([[v for _, v in r["curves"][r["head"]]] for r in runs], dtype=torch.float64)
            ax.plot(ep, ys.mean(0), color=colors[method], label=f"{method} (n={len(runs)})")
            ax.fill_between(ep, ys.min(0).values, ys.max(0).values, color=colors[method], alpha=0.2)
        ax.set_title(setting, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("top-1 (%)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    p.add_argument("--methods", nargs="+", choices=list(METHOD_ALPHA), default=list(METHOD_ALPHA))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cifar-dir", type=Path, default=None, help="unpacked CIFAR-10 JPEG folder (train/, test/)")
    p.add_argument("--runs-dir", type=Path, default=Path.home() / ".cache" / "automix-lite" / "small_data_runs")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--tag", default="small_data")
    p.add_argument("--quick", action="store_true", help="smoke mode: 2 epochs on 64 images")
    p.add_argument("--summary-only", action="store_true", help="train nothing: tables and figure from the log")
    p.add_argument("--merge", nargs="*", type=Path, default=[],
                   help="more run logs (*_runs.jsonl of parallel processes) to read with this tag's own")
    return p.parse_args(argv)


def _cifar_dir(args) -> Path | None:
    if "cifar_1000" not in args.settings:
        return None
    if args.cifar_dir is not None:
        return args.cifar_dir
    from accuracy import DEFAULT_ARCHIVE, DEFAULT_CACHE, unpack_cifar

    if not DEFAULT_ARCHIVE.exists() and not (DEFAULT_CACHE / "train").is_dir():
        print(f"[small_data] cifar_1000 skipped: no archive at {DEFAULT_ARCHIVE}", flush=True)
        args.settings = [s for s in args.settings if s != "cifar_1000"]
        return None
    return unpack_cifar(DEFAULT_ARCHIVE, DEFAULT_CACHE)


def main(argv: list[str] | None = None) -> dict:
    threads = torch.get_num_threads()
    try:
        return _main(parse_args(argv), argv)
    finally:
        torch.set_num_threads(threads)  # called from a test or a notebook: leave the process as it was


def _main(args: argparse.Namespace, argv: list[str] | None) -> dict:
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    data_dir = None if args.summary_only else _cifar_dir(args)
    log_path = args.out / f"{args.tag}_runs.jsonl"
    done = {}
    for path in [log_path, *args.merge]:
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    rec = json.loads(line)
                    done[_key(rec["setting"], rec["config"])] = rec
    prov = provenance(torch.device("cpu"), args.seeds[0], None if argv is None else [sys.argv[0], *argv])
    plan = [(s, m, seed) for s in args.settings for seed in args.seeds for m in args.methods]
    for i, (setting, method, seed) in enumerate([] if args.summary_only else plan):
        cfg = run_config(setting, method, seed, args.runs_dir, data_dir, args.quick)
        if _key(setting, cfg.to_dict()) in done:
            continue
        rec = run_logged("small_data", i, len(plan), f"{setting} {method} seed {seed}",
                         lambda: run_one(setting, cfg), log_path)
        done[_key(setting, rec["config"])] = rec
    records = [r for r in done.values() if r["setting"] in args.settings]
    summary = summarize(records)
    result = {"benchmark": "small_data", "provenance": prov, "settings": {s: SETTINGS[s] for s in args.settings},
              "method_alpha": METHOD_ALPHA, "logs": [str(p) for p in [log_path, *args.merge]],
              # median, not mean: a run paused by another benchmark counts its pause as wall time
              "median_wall_time_s": {s: {m: statistics.median(r["wall_time_s"] for r in records
                                                              if r["setting"] == s and r["method"] == m)
                                         for m in summary[s]["methods"]} for s in summary},
              "summary": summary}
    (args.out / f"{args.tag}.json").write_text(json.dumps(result, indent=1))
    md = markdown(summary, prov)
    (args.out / f"{args.tag}.md").write_text(md)
    if records:
        curve_plot(records, args.out / f"{args.tag}.png")
    print(md)
    return result


if __name__ == "__main__":
    main()
