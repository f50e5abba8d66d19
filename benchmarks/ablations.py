"""Predict, then run: five one-factor ablations of the AutoMix step, several seeds each (notebook 02c).

AutoMix: Liu, Li et al., "AutoMix: Unveiling the Power of Mixup for Stronger Classifiers", ECCV 2022,
arXiv:2103.13027 (the step: docs/algorithm.md#one-training-step). Each variant changes one thing of the step
and nothing else (``VARIANTS``):

* ``baseline``: the step as the library runs it;
* ``mask_bb_attached``: M_bb not detached, so the backbone's mixed loss L_mix_q also trains the Mix Block;
* ``shared_lam``: one λ for both draws (λ_bb = λ_mb; the pairings stay independent);
* ``online_judge``: L_mix_k computed by the online encoder and its mix head instead of the momentum ones;
* ``no_mask_loss``: ``mask_loss_weight=0``;
* ``no_fallback``: ``lam_margin=-1`` (the backbone always mixes with the Mix Block's mask).

The first three are ``StepAblation`` options of ``AutoMix.training_step``; the last two are ordinary options.
Every run trains the ``quick`` preset (digits at 16 px, ``resnet_tiny_cifar``, the Mix Block on layer2) for
``--epochs`` epochs with the trainer's optimizer groups and learning-rate schedule, in a plain loop around the
readable step (``AutoMix.training_step``), and records for the Mix Block's training masks M_mb of the last
epoch: the mean per-mask spatial std of the own channel (0 = a flat MixUp mask), the mean |own area − λ_mb|
and the least-squares slope of the own area on λ_mb; then the final top-1 of every head on the 500 validation
digits, and four masks (seed 0) for the figure.

Every finished run is appended to ``<out>/ablations_runs.jsonl``; a rerun skips the runs already there (resume).
After every run ``ablations.json`` / ``ablations.md`` hold the table (mean ± sample std over seeds) with
provenance and ``ablations.png`` the figure.

Example::

    nice -n 10 python benchmarks/ablations.py --seeds 0 1 2 --epochs 4
    python benchmarks/ablations.py --quick --out /tmp/abl      # smoke run, seconds
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

from automix_lite import TrainConfig  # noqa: E402
from automix_lite.core.automix import StepAblation  # noqa: E402
from automix_lite.trainer.data import build_loaders  # noqa: E402
from automix_lite.trainer.engine import build_model, evaluate, param_groups, set_lr  # noqa: E402

from provenance import provenance  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# name: (TrainConfig overrides, StepAblation or None, the question the notebook asks)
VARIANTS: dict[str, tuple[dict, StepAblation | None, str]] = {
    "baseline": ({}, None, "the step as the library runs it"),
    "mask_bb_attached": ({}, StepAblation(detach_mask_bb=False), "M_bb not detached"),
    "shared_lam": ({}, StepAblation(shared_lam=True), "one λ shared by both draws"),
    "online_judge": ({}, StepAblation(judge="online"), "the Mix Block judged by the online network"),
    "no_mask_loss": ({"mask_loss_weight": 0.0}, None, "no mask loss"),
    "no_fallback": ({"lam_margin": -1.0}, None, "no λ-margin fallback"),
}
METRICS = ("mask_std", "area_gap", "area_slope", "mean_area", "top1_one_k", "top1_best")


def config(variant: str, seed: int, epochs: int, quick: bool) -> TrainConfig:
    """The run's ``TrainConfig``: the quick preset, ``epochs`` epochs, the variant's overrides."""
    kw = dict(VARIANTS[variant][0], seed=seed, epochs=epochs, threads=1, data_on_device=False)
    if quick:
        kw.update(train_subset=64, val_subset=64, batch_size=16)
    return TrainConfig.preset("quick", **kw)


def _slope(xs: list[float], ys: list[float]) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx > 0 else 0.0


def mask_stats(steps: list[tuple[float, float, float]]) -> dict[str, float]:
    """From (λ_mb, own area, per-mask std) of a run's steps: mean std, mean |area − λ|, slope of area on λ."""
    lams, areas, stds = zip(*steps)
    return {"mask_std": statistics.fmean(stds), "area_gap": statistics.fmean(abs(a - lam) for lam, a in
                                                                             zip(lams, areas)),
            "area_slope": _slope(list(lams), list(areas)), "mean_area": statistics.fmean(areas)}


@torch.no_grad()
def example_masks(model, val_loader, k: int = 4) -> list:
    """Own-channel masks [k, H, W] (as lists) of the first k validation images, each mixed with the next."""
    x = next(iter(val_loader))[0][: k + 1]
    perm = torch.roll(torch.arange(x.shape[0]), -1)
    return model.generate_mask(x, 0.5, perm)[:k, 0].tolist()


def train_one(variant: str, seed: int, epochs: int, quick: bool = False) -> dict:
    """Train one variant with one seed; a flat record of its mask statistics and accuracy."""
    cfg, (_, ablation, _) = config(variant, seed, epochs, quick), VARIANTS[variant]
    t0, threads = time.time(), torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    try:
        train_loader, val_loader, sampler, info = build_loaders(cfg, device="cpu")
        model = build_model(cfg, info.num_classes, info.in_chans)
        opt = torch.optim.SGD(param_groups(model, cfg), lr=cfg.lr, momentum=cfg.momentum,
                              weight_decay=cfg.weight_decay)
        gen, total, step, per_epoch = torch.Generator().manual_seed(cfg.seed * 1000), epochs * len(train_loader), 0, []
        for epoch in range(epochs):
            sampler.set_epoch(epoch)
            rows = []
            for i, (x, y) in enumerate(train_loader):
                set_lr(opt, cfg, epoch, i, len(train_loader))
                out = model.training_step(x, y, step, total, generator=gen, ablation=ablation)
                opt.zero_grad(set_to_none=True)
                out["loss"].backward()
                opt.step()
                model.momentum_update(step, total)
                own = out["mask_mb"][:, 0]  # [N, H, W]
                rows.append((float(out["lam_mb"]), float(own.mean()), float(own.std((1, 2)).mean())))
                step += 1
            per_epoch.append(mask_stats(rows))
        top1 = evaluate(model, val_loader, torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    return {"variant": variant, "seed": seed, "epochs": epochs, "steps": total, **per_epoch[-1],
            "top1_one_k": top1["one_k"], "top1_best": max(top1.values()), "top1_heads": top1,
            "per_epoch": per_epoch, "masks": example_masks(model, val_loader) if seed == 0 else None,
            "wall_time_s": time.time() - t0, "config": cfg.to_dict()}


def load_runs(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def summarize(records: list[dict]) -> dict:
    """{variant: {metric: {"mean", "std", "per_seed"}, "n": seeds}} in ``VARIANTS`` order."""
    out = {}
    for v in VARIANTS:
        rs = sorted((r for r in records if r["variant"] == v), key=lambda r: r["seed"])
        if rs:
            out[v] = {"n": len(rs), **{m: {"mean": statistics.fmean(r[m] for r in rs),
                                           "std": statistics.stdev(r[m] for r in rs) if len(rs) > 1 else 0.0,
                                           "per_seed": {r["seed"]: r[m] for r in rs}} for m in METRICS}}
    return out


def markdown(summary: dict, prov: dict, records: list[dict], note: str = "") -> str:
    r0 = records[0]
    lines = [f"Provenance: {prov['hardware']['cpu_model']}, 1 torch thread, torch {prov['versions']['torch']}, "
             f"{prov['date_utc']}, load average at start {prov['hardware']['loadavg_at_start']}.",
             f"Command: `{prov['command']}`" + (f" {note}" if note else ""), "",
             f"Setting: the `quick` preset (digits, 16 px, resnet_tiny_cifar, Mix Block on layer2), {r0['epochs']} "
             f"epochs = {r0['steps']} steps of 32, one run per seed (seeds {sorted({r['seed'] for r in records})}).",
             "Mask columns: the Mix Block's training masks M_mb over the last epoch (own channel): per-mask std "
             "(0 = flat), mean |own area − λ_mb|, slope of the own area on λ_mb, mean own area. Top-1 (%) on the "
             "500 validation digits after the last step. Each cell: mean ± sample std over seeds.", "",
             "| variant | changes | seeds | mask std | \\|area − λ\\| | area-on-λ slope | mean area "
             "| top-1 one_k | top-1 best head |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for v, s in summary.items():
        cells = [f"{s[m]['mean']:.3f} ± {s[m]['std']:.3f}" for m in METRICS[:4]]
        cells += [f"{s[m]['mean']:.1f} ± {s[m]['std']:.1f}" for m in METRICS[4:]]
        lines.append(f"| {v} | {VARIANTS[v][2]} | {s['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def figure(records: list[dict], path: Path) -> None:
    """Left: mask std per epoch (mean over seeds, one line per variant); right: seed-0 example masks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [v for v in VARIANTS if any(r["variant"] == v for r in records)]
    fig = plt.figure(figsize=(11, 0.9 * len(names) + 1.6))
    ax = fig.add_axes([0.06, 0.12, 0.38, 0.78])
    for v in names:
        rs = [r for r in records if r["variant"] == v]
        n = min(len(r["per_epoch"]) for r in rs)
        ys = [statistics.fmean(r["per_epoch"][e]["mask_std"] for r in rs) for e in range(n)]
        ax.plot(range(1, n + 1), ys, marker="o", label=v)
    ax.set(xlabel="epoch", ylabel="per-mask std of M_mb (own)", title="mask structure over training")
    ax.legend(fontsize=8)
    for i, v in enumerate(names):
        masks = next((r["masks"] for r in records if r["variant"] == v and r.get("masks")), None) or []
        for j, m in enumerate(masks):
            a = fig.add_axes([0.5 + 0.11 * j, 0.9 - (i + 1) * 0.8 / len(names), 0.1, 0.75 / len(names)])
            a.imshow(m, vmin=0, vmax=1, cmap="viridis")
            a.set_xticks([]), a.set_yticks([])
            if j == 0:
                a.set_ylabel(v, fontsize=7)
    fig.suptitle("AutoMix ablations: Mix Block masks (seed 0, λ = 0.5, own channel)", x=0.72, fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_results(records: list[dict], out: Path, args: argparse.Namespace) -> dict:
    prov = provenance(torch.device("cpu"), args.seeds[0])
    summary = summarize(records)
    variants = {v: VARIANTS[v][2] for v in VARIANTS}
    (out / "ablations.json").write_text(json.dumps({"provenance": prov, "note": args.note, "variants": variants,
                                                    "summary": summary}, indent=1) + "\n")
    (out / "ablations.md").write_text(markdown(summary, prov, records, args.note))
    figure(records, out / "ablations.png")
    return summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--note", default="", help="how the runs were made, for the results files")
    p.add_argument("--quick", action="store_true", help="64 images, 1 epoch, seed 0: a smoke run")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs = [0], 1
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "ablations_runs.jsonl"
    for seed in args.seeds:  # seed-major: a stopped study has every variant for its first seeds
        for v in args.variants:
            if any(r["variant"] == v and r["seed"] == seed and r["epochs"] == args.epochs for r in load_runs(log)):
                continue
            rec = train_one(v, seed, args.epochs, args.quick)
            with log.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            print(f"{v:17s} seed {seed}: mask std {rec['mask_std']:.3f}, |area-λ| {rec['area_gap']:.3f}, "
                  f"top-1 {rec['top1_one_k']:.1f}% ({rec['wall_time_s']:.0f} s)", flush=True)
            write_results([r for r in load_runs(log) if r["epochs"] == args.epochs], args.out, args)
    done = [r for r in load_runs(log) if r["epochs"] == args.epochs]
    if done:  # also after a run that found everything done (e.g. logs merged from parallel processes)
        write_results(done, args.out, args)


if __name__ == "__main__":
    main()
