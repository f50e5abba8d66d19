"""Label mismatch of every pixel mixer and of AutoMix, read by an independent judge (docs/label_mismatch.md).

AutoMix: Liu, Li et al., "AutoMix: Unveiling the Power of Mixup for Stronger Classifiers", ECCV 2022,
arXiv:2103.13027. Its argument: hand-crafted mixes often do not carry their label; the Mix Block learns masks
whose mixed image does. For a mixed image x̃ = mix(x_i, x_j) with label weight λ this script asks a judge for
s = p(y_i | x̃) / (p(y_i | x̃) + p(y_j | x̃)) (``automix_lite.trainer.mismatch.label_shares``) and reports
E|s − λ| (content against the label), E|s − area| (content against the mask's own area), how the area follows λ,
and the saliency share kept.

Judge: a vanilla classifier trained without mixing, with its own seed, never the AutoMix model that made the
masks. AutoMix's mixes are also scored by the model's own momentum encoder (the ``mix_k`` head the Mix Block
was trained against); every mixer is, so the gap between the two judges can be compared across mixers.

Data: the 500 validation images of the quick preset's digits (16 px; no model trained on them), and, when the
background study's finished run is there, Fashion-MNIST 16 px (500 of the ``small_data`` validation images).
Same pairs, same λ draws for every mixer: each draw orders the images at random, cuts them into batches of
``--batch`` paired by ``pairing='flip'`` (image k with image n-1-k), λ ~ U(0, 1) per batch forced on every mixer.

Trainings (cached under ``--runs-dir``; a rerun reuses a finished run with the same config):
* digits: vanilla judge (quick preset, seeds 1 and 2), λ-aware AutoMix (quick preset, ``lam_concat=True``, seed 0,
  the shipped model's seed); the shipped model is ``load_pretrained("quick")``.
* fashion: AutoMix = ``confirm_fashion_500_automix_s3`` of benchmarks/confirm.py (read only); judge = its
  ``confirm_fashion_500_vanilla_s4`` when finished, else this script's own vanilla run (seed 4).

Example::

    nice -n 10 python benchmarks/label_mismatch.py                 # ~5 min on 2 busy cores with the runs cached
    python benchmarks/label_mismatch.py --quick --out /tmp/lm      # smoke run, < 1 minute
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

from automix_lite import MIXERS, TrainConfig, load_model, load_pretrained, mix, train  # noqa: E402
from automix_lite.core.mixing import mix_images  # noqa: E402
from automix_lite.trainer.data import build_datasets  # noqa: E402
from automix_lite.trainer.mismatch import area_follow, binned_curve, label_shares  # noqa: E402

from provenance import provenance  # noqa: E402

CACHE = Path.home() / ".cache" / "automix-lite"
CONFIRM_RUNS = CACHE / "confirm_runs"
BINS = 10
MAIN_JUDGE = "vanilla"  # the judge the headline table uses (the first vanilla judge of each data set)


def pixel_mixers() -> list[str]:
    """Every mixer of ``MIXERS`` that mixes pixels (a mask, a partner): not vanilla, not manifoldmix."""
    x, y = torch.zeros(4, 1, 8, 8), torch.arange(4)
    return [m for m in MIXERS if m != "vanilla" and mix(x, y, m, lam=0.5, pairing="flip").mask is not None]


def _same_config(run: Path, cfg: TrainConfig) -> bool:
    path = run / "metrics.json"
    if not path.is_file():
        return False
    old = json.loads(path.read_text()).get("config", {})
    skip = ("out", "resume")
    return {k: v for k, v in old.items() if k not in skip} == {k: v for k, v in cfg.to_dict().items() if k not in skip}


def train_cached(cfg: TrainConfig) -> torch.nn.Module:
    """The model of ``cfg``'s run: loaded when a finished run with the same config is in ``cfg.out``, else trained."""
    if not _same_config(Path(cfg.out), cfg):
        print(f"[label_mismatch] training {Path(cfg.out).name}", flush=True)
        train(cfg, figures=False, progress="off")
    return load_model(cfg.out).eval()


def val_images(cfg: TrainConfig, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` validation images of ``cfg``'s data (normalised as the models take them) and labels."""
    _, val, _ = build_datasets(cfg.replace(train_subset=64))  # the training subset is not used here
    items = [val[i] for i in range(min(n, len(val)))]
    return torch.stack([a for a, _ in items]), torch.tensor([b for _, b in items])


def digits_models(runs: Path, quick: bool) -> tuple[dict, dict, TrainConfig]:
    """(mask models, judges, data config) on digits: shipped + λ-aware AutoMix, vanilla judges."""
    over = dict(epochs=1, train_subset=64) if quick else {}
    base = TrainConfig.preset("quick", out=str(runs / "unused"), **over)
    lamcat = train_cached(base.replace(method="automix", seed=0, lam_concat=True,
                                       out=str(runs / f"digits_automix_lamcat_s0{'_quick' if quick else ''}")))
    judges = {}
    for seed in (1,) if quick else (1, 2):
        name = "vanilla" if seed == 1 else f"vanilla_s{seed}"
        judges[name] = train_cached(base.replace(method="vanilla", seed=seed,
                                                 out=str(runs / f"digits_vanilla_s{seed}{'_quick' if quick else ''}")))
    shipped = load_pretrained("quick")
    models = {"automix": shipped.model, "automix_lamcat": lamcat}
    judges.update({"automix.mix_k": _head(shipped.model), "automix_lamcat.mix_k": _head(lamcat)})
    return models, judges, base


def fashion_models(runs: Path, confirm: Path) -> tuple[dict, dict, TrainConfig] | None:
    """(mask models, judges, data config) on Fashion-MNIST, or None while the AutoMix run is unfinished."""
    am_run = confirm / "confirm_fashion_500_automix_s3"
    if not (am_run / "metrics.json").is_file():
        print(f"[label_mismatch] fashion skipped: {am_run} has not finished", flush=True)
        return None
    automix = load_model(am_run).eval()
    cfg = TrainConfig.from_dict({**json.loads((am_run / "metrics.json").read_text())["config"], "resume": None})
    judge_run = confirm / "confirm_fashion_500_vanilla_s4"
    if (judge_run / "metrics.json").is_file():
        judge = load_model(judge_run).eval()
    else:
        judge = train_cached(cfg.replace(method="vanilla", seed=4, alpha=1.0, out=str(runs / "fashion_vanilla_s4")))
    return {"automix": automix}, {"vanilla": judge, "automix.mix_k": _head(automix)}, cfg


class _head(torch.nn.Module):
    """An AutoMix read through one head (``mix_k``: the momentum encoder the Mix Block was trained against)."""

    def __init__(self, model: torch.nn.Module, head: str = "mix_k"):
        super().__init__()
        self.model, self.head = model, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, head=self.head)


def draws(n: int, batch: int, seed: int) -> list[tuple[torch.Tensor, float, int]]:
    """One draw: (image indices of a batch, its λ ~ U(0, 1), the mixers' generator seed) per batch."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=g)
    out = []
    for b, k in enumerate(range(0, n - batch + 1, batch)):
        lam = float(torch.rand((), generator=g, dtype=torch.float64))
        out.append((order[k:k + batch], lam, seed * 10_000 + b))
    return out


def mix_batch(method: str, models: dict, x: torch.Tensor, y: torch.Tensor, lam: float, gseed: int):
    """(mixed images, label weight λ per image, own mask) of one batch, partner k <-> n-1-k for every mixer."""
    perm = torch.arange(len(x)).flip(0)
    if method in models:  # a Mix Block: its mask for this λ and pairing, the label weight is λ
        own = models[method].generate_mask(x, lam, perm)[:, 0:1]  # [N, 1, H, W]
        return mix_images(x, own, perm), torch.full((len(x),), lam), own
    out = mix(x, y, method, lam=lam, generator=torch.Generator().manual_seed(gseed), pairing="flip")
    assert torch.equal(out.perm.cpu(), perm), "the mixer did not use the pairing asked for"
    return out.images, out.lam, out.mask


def mixed_draw(method: str, models: dict, x, y, seed: int, batch: int):
    """One draw for one mixer over all images: (indices, perm, mixed, λ per image, own mask), batches concatenated
    (each batch's partner k <-> n-1-k; ``perm`` indexes the concatenation)."""
    parts = [(idx, *mix_batch(method, models, x[idx], y[idx], lam, gseed)) for idx, lam, gseed in draws(len(x), batch, seed)]
    flip = torch.arange(batch).flip(0)
    perm = torch.cat([k * batch + flip for k in range(len(parts))])
    return (torch.cat([p[0] for p in parts]), perm, *(torch.cat([p[i] for p in parts]) for i in (1, 2, 3)))


def measure(models: dict, judges: dict, x, y, methods: list[str], seeds: list[int], batch: int) -> dict:
    """{judge: {method: {"per_draw": [summary per draw], "pairs": pooled per-pair fields}}}."""
    res: dict = {j: {m: {"per_draw": [], "pairs": []} for m in methods} for j in judges}
    for seed in seeds:
        for m in methods:
            idx, perm, mixed, lam_v, own = mixed_draw(m, models, x, y, seed, batch)
            for j, judge in judges.items():
                sal = j == MAIN_JUDGE and m != "resizemix"  # ResizeMix shrinks the partner: not pixel-aligned
                r = label_shares(judge, x[idx], y[idx], perm, mixed, lam_v, own, saliency=sal)
                pooled = {f: getattr(r, f) for f in ("share", "lam", "area", "mismatch", "area_mismatch", "p_pair",
                                                     "valid", "saliency_share")}
                res[j][m]["pairs"].append(pooled)
                res[j][m]["per_draw"].append(_summary(pooled))
    return res


def _summary(p: dict) -> dict:
    v = p["valid"]
    out = {"mismatch": float(p["mismatch"][v].mean()), "area_mismatch": float(p["area_mismatch"][v].mean()),
           "bias": float((p["share"] - p["lam"])[v].mean()), "p_pair": float(p["p_pair"][v].mean()),
           "n_pairs": int(v.sum())}
    if p["saliency_share"] is not None:
        out["saliency_mismatch"] = float((p["saliency_share"] - p["lam"])[v].abs().mean())
    return out


def _stat(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "per_draw": values}


def summarize(res: dict) -> dict:
    """Per judge and method: mean ± std over draws of each summary; curves and area-vs-λ from the pooled pairs."""
    out: dict = {}
    for j, by_m in res.items():
        out[j] = {}
        for m, r in by_m.items():
            keys = r["per_draw"][0].keys()
            row = {k: _stat([d[k] for d in r["per_draw"]]) for k in keys if k != "n_pairs"}
            row["n_pairs_per_draw"] = r["per_draw"][0]["n_pairs"]
            cat = {f: torch.cat([p[f] for p in r["pairs"]]) for f in ("share", "lam", "area", "valid")}
            row["share_curve"] = binned_curve(cat["lam"], cat["share"], BINS, cat["valid"])
            row["area_curve"] = binned_curve(cat["lam"], cat["area"], BINS, cat["valid"])
            row["area_follow"] = area_follow(cat["lam"], cat["area"])
            out[j][m] = row
    return out


def clean_top1(judges: dict, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Top-1 (%) of each judge on the clean images measured on."""
    with torch.no_grad():
        return {j: float((judge(x).argmax(1) == y).double().mean() * 100) for j, judge in judges.items()}


def markdown(result: dict) -> str:
    """The tables of ``result`` (the JSON written): per data set, the main judge's table and the judge gap."""
    prov = result["provenance"]
    lines = [f"Provenance: {prov['hardware']['cpu_model']}, {prov['hardware']['torch_threads']} torch thread(s), no "
             f"GPU, torch {prov['versions']['torch']}, timm {prov['versions']['timm']}, {prov['date_utc']}.",
             f"Command: `{prov['command']}`; draws (seeds) {result['settings']['seeds']}, batches of "
             f"{result['settings']['batch']} paired k <-> n-1-k, λ ~ U(0, 1) per batch, the same for every mixer.", "",
             "s = p(y_i|x̃) / (p(y_i|x̃) + p(y_j|x̃)) read by the judge; |s − λ| = content against the label weight, "
             "|s − area| = content against the mask's own area; area ~ λ: least-squares slope and correlation of "
             "the area on λ; saliency = |kept share of the judge's input-gradient saliency − λ|; p(y_i)+p(y_j): the "
             "judge's belief on either class. Mean ± std over draws; lower mismatch = the mix carries its label.", ""]
    for ds, d in result["datasets"].items():
        s = d["summary"]
        dp = d.get("provenance", prov)
        lines += [f"### {ds}", "", f"Measured by `{dp['command']}` on {dp['date_utc']} ({dp['hardware']['cpu_model']}, "
                  f"load average {dp['hardware']['loadavg_at_start'][0]:.1f} at the start).", "",
                  "Judges (clean top-1 on these images): " + ", ".join(
            f"{j} {v:.1f} %" for j, v in d["clean_top1"].items()) + f". Mask models: {d['models']}.", "",
                  f"Judge **{MAIN_JUDGE}** ({d['judge_source']}):", "",
                  "| mixer | E\\|s − λ\\| | E\\|s − area\\| | bias s − λ | area ~ λ slope (corr) | saliency | "
                  "p(y_i)+p(y_j) |", "|---|---:|---:|---:|---:|---:|---:|"]
        for m, r in sorted(s[MAIN_JUDGE].items(), key=lambda kv: kv[1]["mismatch"]["mean"]):
            af, sal = r["area_follow"], r.get("saliency_mismatch")
            sal_s = f"{sal['mean']:.3f}" if sal else "—"
            lines.append(f"| {m} | {r['mismatch']['mean']:.3f} ± {r['mismatch']['std']:.3f} | "
                         f"{r['area_mismatch']['mean']:.3f} | {r['bias']['mean']:+.3f} | {af['slope']:.2f} "
                         f"({af['corr']:.2f}) | {sal_s} | {r['p_pair']['mean']:.2f} |")
        others = [j for j in s if j != MAIN_JUDGE]
        lines += ["", "E|s − λ| of every mixer by every judge (the `.mix_k` judges are the AutoMix models' own "
                  "momentum encoders):", "", "| mixer | " + " | ".join(s) + " |", "|---|" + "---:|" * len(s)]
        for m in s[MAIN_JUDGE]:
            lines.append(f"| {m} | " + " | ".join(f"{s[j][m]['mismatch']['mean']:.3f}" for j in s) + " |")
        lines += ["", "Judge gap (own momentum encoder − vanilla judge) of E|s − λ|: " + "; ".join(
            f"{m} by {j}: {d['judge_gap'][j][m]:+.3f}" for j in others if j in d["judge_gap"]
            for m in d["judge_gap"][j]) + ".", ""]
    return "\n".join(lines)


def doc_block(result: dict) -> str:
    """The headline table docs/label_mismatch.md quotes (tests/test_label_mismatch.py keeps the two equal)."""
    lines = []
    for ds, d in result["datasets"].items():
        s = d["summary"]
        alt = [j for j in s if j.startswith("vanilla_")]
        lines += [f"**{ds}** ({d['images']} validation images, draws {result['settings']['seeds']}; judge top-1 on "
                  f"them {d['clean_top1'][MAIN_JUDGE]:.1f} %)", "",
                  "| mixer | E\\|s − λ\\| | E\\|s − area\\| | area ~ λ slope | "
                  + "".join(f"E\\|s − λ\\| judge {j} | " for j in alt) + "E\\|s − λ\\| own encoder |",
                  "|---|---:|---:|---:|" + "---:|" * (len(alt) + 1)]
        for m, r in sorted(s[MAIN_JUDGE].items(), key=lambda kv: kv[1]["mismatch"]["mean"]):
            own = s.get(f"{m}.mix_k", {}).get(m)
            lines.append(f"| {m} | {r['mismatch']['mean']:.3f} ± {r['mismatch']['std']:.3f} | "
                         f"{r['area_mismatch']['mean']:.3f} | {r['area_follow']['slope']:.2f} | "
                         + "".join(f"{s[j][m]['mismatch']['mean']:.3f} | " for j in alt)
                         + (f"{own['mismatch']['mean']:.3f} |" if own else "— |"))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def judge_gap(summary: dict) -> dict:
    """{own judge: {mixer: E|s − λ| by the AutoMix model's own encoder − by the vanilla judge}} for its mixer."""
    return {j: {m: summary[j][m]["mismatch"]["mean"] - summary[MAIN_JUDGE][m]["mismatch"]["mean"]
                for m in summary[j] if m == j.split(".")[0]} for j in summary if j.endswith(".mix_k")}


def run_dataset(name: str, loaded: tuple, args, judge_source: str) -> dict:
    """Measure one data set; the JSON record of it."""
    models, judges, cfg = loaded
    judges = {j: jd.eval() for j, jd in judges.items()}
    x, y = val_images(cfg, args.images)
    methods = pixel_mixers() + list(models)
    t0 = time.time()
    summary = summarize(measure(models, judges, x, y, methods, args.seeds, args.batch))
    print(f"[label_mismatch] {name}: {len(methods)} mixers x {len(judges)} judges in {time.time() - t0:.0f} s",
          flush=True)
    return {"provenance": provenance(torch.device("cpu"), args.seeds[0], args.argv), "measure_s": time.time() - t0,
            "images": len(x), "models": {m: _describe(mdl) for m, mdl in models.items()}, "judge_source": judge_source,
            "clean_top1": clean_top1(judges, x, y), "summary": summary, "judge_gap": judge_gap(summary)}


def _describe(model) -> str:
    return f"AutoMix, lam_concat={model.mix_block.lam_concat}, feature_stage={model.feature_stage}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="*", choices=["digits", "fashion"], default=["digits", "fashion"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="draws: pairs, λ, mixer draws")
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs-dir", type=Path, default=CACHE / "label_mismatch_runs")
    p.add_argument("--confirm-runs", type=Path, default=CONFIRM_RUNS, help="benchmarks/confirm.py's runs (read only)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--tag", default="label_mismatch")
    p.add_argument("--quick", action="store_true", help="smoke mode: 1-epoch trainings, 40 images, digits only")
    p.add_argument("--merge", nargs="*", type=Path, default=[],
                   help="results JSONs of earlier runs (e.g. one data set each): their data sets are kept")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    args.argv = argv
    if args.quick:
        args.images, args.batch, args.datasets, args.seeds = 40, 10, ["digits"], args.seeds[:2]
    torch.set_num_threads(args.threads)
    result = {"provenance": provenance(torch.device("cpu"), args.seeds[0], argv),
              "settings": {"seeds": args.seeds, "batch": args.batch, "images": args.images, "bins": BINS,
                           "lam": "U(0, 1) per batch", "pairing": "flip within a batch", "quick": args.quick,
                           "mixers": pixel_mixers()},
              "datasets": {}}
    for path in args.merge:  # each data set keeps the provenance of the run that measured it
        old = json.loads(path.read_text())
        result["datasets"].update({k: {"provenance": old["provenance"], **d} for k, d in old["datasets"].items()})
    for ds in args.datasets:
        if ds == "digits":
            src = "quick preset, method vanilla, seed 1, this script's run"
            result["datasets"]["digits"] = run_dataset("digits", digits_models(args.runs_dir, args.quick), args, src)
        else:
            loaded = fashion_models(args.runs_dir, args.confirm_runs)
            if loaded is not None:
                src = ("confirm_fashion_500_vanilla_s4 (benchmarks/confirm.py)"
                       if (args.confirm_runs / "confirm_fashion_500_vanilla_s4" / "metrics.json").is_file()
                       else "small_data setting, method vanilla, seed 4, this script's run")
                result["datasets"]["fashion"] = run_dataset("fashion", loaded, args, src)
    write(result, args.out, args.tag)
    return result


def write(result: dict, out: Path, tag: str) -> None:
    """``<tag>.json``, ``<tag>.md`` and the figure ``<tag>.png``."""
    from automix_lite.views.mismatch import plot_label_mismatch

    out.mkdir(parents=True, exist_ok=True)
    (out / f"{tag}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"{tag}.md").write_text(markdown(result) + "\n")
    fig = plot_label_mismatch(result, judge=MAIN_JUDGE)
    fig.savefig(out / f"{tag}.png", dpi=80)
    print(f"[label_mismatch] wrote {out / tag}.json/.md/.png", flush=True)


if __name__ == "__main__":
    main()
