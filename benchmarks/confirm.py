"""The pre-registered confirmatory study of AutoMix's small-data gain (``benchmarks/preregistration.md``).

AutoMix: Liu, Li et al., "AutoMix: Unveiling the Power of Mixup for Stronger Classifiers", ECCV 2022,
arXiv:2103.13027. The exploratory study (``benchmarks/small_data.py``) found AutoMix +0.63 points above vanilla
on 500 Fashion-MNIST images after searching five settings. This script runs what the pre-registration fixed
(settings, seeds, methods, α, metric) and computes the analysis it fixed (mean paired difference to vanilla, its
Student-t 95 % confidence interval, wins, and the verdict) from the run logs alone.

Each finished run is appended at once to ``<out>/confirm_<setting>_runs.jsonl``; a rerun skips what is there,
so an interrupted study resumes where it stopped. ``--summary-only`` trains nothing and writes
``<out>/confirm.json`` / ``confirm.md`` from every log it finds.

Example::

    nice -n 15 python benchmarks/confirm.py --settings fashion_500        # one process per setting
    python benchmarks/confirm.py --summary-only
    python benchmarks/confirm.py --quick --out /tmp/confirm               # smoke run, about a minute
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP (see benchmarks/README.md)

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from automix_lite import TrainConfig  # noqa: E402

from accuracy import run_logged  # noqa: E402
from provenance import provenance  # noqa: E402
from small_data import METHOD_ALPHA, run_one  # noqa: E402

# Fixed by benchmarks/preregistration.md (tests/test_confirm.py keeps the two equal).
SETTINGS: dict[str, dict] = {
    "fashion_500": dict(dataset="fashion-mnist", img_size=16, train_subset=500, val_subset=2000, epochs=120,
                        eval_every=10),
    "fashion_1000_e60": dict(dataset="fashion-mnist", img_size=16, train_subset=1000, val_subset=2000, epochs=60,
                             eval_every=10),
}
SEEDS = (3, 4, 5, 6, 7)
PRIMARY = ("vanilla", "automix")
SECONDARY = ("mixup", "cutmix")


def run_config(setting: str, method: str, seed: int, runs_dir: Path, quick: bool) -> TrainConfig:
    """The ``TrainConfig`` of one run: the ``quick`` preset with the setting's overrides (as small_data.py)."""
    kw = dict(SETTINGS[setting], method=method, seed=seed, alpha=METHOD_ALPHA[method],
              out=str(runs_dir / f"confirm_{setting}_{method}_s{seed}"), log_every=10**6, median_last_k=3)
    if quick:
        kw.update(epochs=2, train_subset=64, val_subset=64, eval_every=1)
    return TrainConfig.preset("quick", **kw)


def plan(settings: list[str], seeds: list[int], methods: list[str]) -> list[tuple[str, str, int]]:
    """Run order: per setting, every seed's primary methods first, then the secondary ones."""
    prim = [m for m in PRIMARY if m in methods]
    sec = [m for m in SECONDARY if m in methods]
    return [(s, m, seed) for s in settings for group in (prim, sec) for seed in seeds for m in group]


def t_quantile(p: float, df: int) -> float:
    """Student-t quantile (scipy's, which scikit-learn brings)."""
    from scipy.stats import t

    return float(t.ppf(p, df))


def paired_ci(diffs: list[float], level: float = 0.95) -> dict:
    """Mean of the paired differences, sample sd, Student-t CI at ``level``, wins (d > 0), n."""
    n = len(diffs)
    mean = statistics.fmean(diffs)
    sd = statistics.stdev(diffs) if n > 1 else float("nan")
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n) if n > 1 else float("nan")
    return {"n": n, "mean_diff": mean, "std_diff": sd, "ci_low": mean - half, "ci_high": mean + half,
            "level": level, "wins": sum(d > 0 for d in diffs), "diffs": diffs}


def verdict(ci: dict, n_planned: int) -> str:
    """The pre-registered verdict: replicated (CI above 0), not replicated (mean <= 0), else inconclusive."""
    if ci["mean_diff"] <= 0:
        v = "not replicated"
    elif ci["ci_low"] > 0:
        v = "replicated"
    else:
        v = "inconclusive"
    return v if ci["n"] >= n_planned else f"{v} (incomplete: {ci['n']} of {n_planned} seeds)"


def analyse(records: list[dict], n_planned: int = len(SEEDS)) -> dict:
    """{setting: {methods: {m: {seed: top1}}, vs_vanilla: {m: ci}, verdict}} plus ``pooled``."""
    out: dict = {}
    pooled: dict[str, list[float]] = {}
    for setting in [s for s in SETTINGS if any(r["setting"] == s for r in records)]:
        by_m: dict[str, dict[int, float]] = {}
        for r in records:
            if r["setting"] == setting:
                by_m.setdefault(r["method"], {})[r["seed"]] = r["top1"]
        van = by_m.get("vanilla", {})
        vs = {}
        for m, per in by_m.items():
            seeds = sorted(set(per) & set(van))
            if m != "vanilla" and len(seeds) > 0:
                d = [per[s] - van[s] for s in seeds]
                vs[m] = dict(paired_ci(d), seeds=seeds)
                pooled.setdefault(m, []).extend(d)
        out[setting] = {"methods": {m: dict(sorted(v.items())) for m, v in by_m.items()}, "vs_vanilla": vs,
                        "verdict": verdict(vs["automix"], n_planned) if "automix" in vs else "no runs"}
    return {"settings": out, "pooled": {m: paired_ci(d) for m, d in pooled.items() if len(d) > 1}}


def quote(result: dict, setting: str) -> str:
    """The one-line form in which the README, docs/recipes.md and notebook 03 quote a setting's primary result
    (tests/test_confirm.py checks every quote against ``confirm.json``)."""
    s = result["analysis"]["settings"][setting]
    c = s["vs_vanilla"]["automix"]
    seeds = c["seeds"]
    return (f"{setting}, seeds {seeds[0]}–{seeds[-1]}: AutoMix − vanilla {c['mean_diff']:+.2f} points "
            f"[95 % CI {c['ci_low']:+.3f}, {c['ci_high']:+.3f}], {c['wins']}/{c['n']} wins: {s['verdict']}")


def secondary_quote(result: dict, setting: str) -> str:
    """The secondary methods' paired differences to vanilla as quoted beside the primary result ('' if none ran)."""
    vs = result["analysis"]["settings"][setting]["vs_vanilla"]
    parts = [f"{m} {vs[m]['mean_diff']:+.2f} ({vs[m]['wins']}/{vs[m]['n']} wins)" for m in SECONDARY if m in vs]
    return f"{setting} secondary, − vanilla: " + ", ".join(parts) if parts else ""


def markdown(result: dict) -> str:
    prov = result["provenance"]
    a = result["analysis"]
    lines = ["# Confirmatory study (pre-registered in `benchmarks/preregistration.md`)", "",
             f"Provenance: {prov['hardware']['cpu_model']}, torch {prov['versions']['torch']}, "
             f"timm {prov['versions']['timm']}, {prov['date_utc']}. Command: `{prov['command']}`", "",
             "Metric: final-epoch top-1 (%) of the default head (`one_k` for AutoMix) on 2,000 validation images. "
             "Paired difference to vanilla per seed; 95 % CI = mean ± t(0.975, n−1)·sd/√n.", ""]
    for setting, s in a["settings"].items():
        lines += [f"## {setting}: `{json.dumps(SETTINGS[setting])}`", "",
                  f"**Verdict (AutoMix − vanilla): {s['verdict']}**", "",
                  f"Quoted as: {quote(result, setting)}" if "automix" in s["vs_vanilla"] else "", "",
                  "| method | per seed (seed: top-1) | mean | − vanilla: mean [95 % CI] | wins |",
                  "|---|---|---:|---:|---:|"]
        for m, per in s["methods"].items():
            ps = ", ".join(f"{k}: {v:.2f}" for k, v in per.items())
            c = s["vs_vanilla"].get(m)
            cs = f"{c['mean_diff']:+.2f} [{c['ci_low']:+.2f}, {c['ci_high']:+.2f}]" if c and c["n"] > 1 else "—"
            ws = f"{c['wins']}/{c['n']}" if c else "—"
            lines.append(f"| {m} | {ps} | {statistics.fmean(per.values()):.2f} | {cs} | {ws} |")
        lines.append("")
    if a["pooled"]:
        lines += ["## Pooled over both settings (descriptive only)", ""]
        for m, c in a["pooled"].items():
            lines.append(f"- {m} − vanilla: {c['mean_diff']:+.2f} [{c['ci_low']:+.2f}, {c['ci_high']:+.2f}], "
                         f"wins {c['wins']}/{c['n']}")
    return "\n".join(lines) + "\n"


def read_logs(out: Path) -> list[dict]:
    recs = {}
    for path in sorted(out.glob("confirm_*_runs.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                recs[(r["setting"], r["method"], r["seed"])] = r
    return list(recs.values())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    p.add_argument("--methods", nargs="+", choices=PRIMARY + SECONDARY, default=list(PRIMARY + SECONDARY))
    p.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    p.add_argument("--runs-dir", type=Path, default=Path.home() / ".cache" / "automix-lite" / "confirm_runs")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--quick", action="store_true", help="smoke mode: 2 epochs on 64 images")
    p.add_argument("--summary-only", action="store_true", help="train nothing: analyse the logs")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    threads = torch.get_num_threads()
    try:
        return _main(parse_args(argv), argv)
    finally:
        torch.set_num_threads(threads)


def _main(args: argparse.Namespace, argv: list[str] | None) -> dict:
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    done = {(r["setting"], r["method"], r["seed"]) for r in read_logs(args.out)}
    todo = [] if args.summary_only else plan(args.settings, args.seeds, args.methods)
    for i, (setting, method, seed) in enumerate(todo):
        if (setting, method, seed) in done:
            continue
        cfg = run_config(setting, method, seed, args.runs_dir, args.quick)
        run_logged("confirm", i, len(todo), f"{setting} {method} seed {seed}",
                   lambda: run_one(setting, cfg), args.out / f"confirm_{setting}_runs.jsonl")
    records = read_logs(args.out)
    prov = provenance(torch.device("cpu"), SEEDS[0], None if argv is None else [sys.argv[0], *argv])
    result = {"benchmark": "confirm", "preregistration": "benchmarks/preregistration.md", "provenance": prov,
              "settings": SETTINGS, "seeds": list(SEEDS), "method_alpha": METHOD_ALPHA,
              "analysis": analyse(records, n_planned=len(args.seeds))}
    (args.out / "confirm.json").write_text(json.dumps(result, indent=1))
    md = markdown(result)
    (args.out / "confirm.md").write_text(md)
    print(md)
    return result


if __name__ == "__main__":
    main()
