"""The README's main job, measured: regenerates its table and guards it.

Runs ``python -m automix_lite train --preset quick --out <dir>/s<S> --seed S`` exactly as a user types it (a
fresh interpreter per seed), records wall and CPU time, the final top-1 of every head and the run's
diagnostics (mask structure and diversity of ``masks.png``, the largest epoch-to-epoch top-1 drop), and writes
``main_job.json`` / ``main_job.md`` (provenance: CPU, threads, load, versions, command, commit, date).

``--check`` runs seed 0 once more and compares it with the stored ``main_job.json``: the final top-1 of every
head within ``TOP1_TOL`` points and the mask std within ``MASK_STD_TOL``. The run is deterministic for a seed
on one machine and one set of library versions (no threads race on results; data order and every draw come
from seeded generators); other CPUs or BLAS builds may round differently, hence the tolerances. It exits 1
when the code has moved away from the published numbers, so a change that alters them is noticed and the
README regenerated (``python benchmarks/main_job.py``).

Example::

    python benchmarks/main_job.py --seeds 0 1 2        # regenerate benchmarks/results/main_job.{json,md}
    python benchmarks/main_job.py --check              # seed 0 against the stored numbers
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "main_job.json"
TOP1_TOL = 0.5  # points of top-1, every head
MASK_STD_TOL = 0.01
# On another CPU model the 640 steps round differently and the trajectory diverges: seed 0 published on an Intel Xeon
# (top-1 99.4 / 99.4 / 99.2 / 99.2, mask std 0.310) gave 98.2 / 98.0 / 98.0 and 0.204 on an AMD EPYC, same code,
# same versions (2026-12-06). A run on another CPU is held to these wider bounds, which still catch a broken step.
OTHER_CPU_TOP1_TOL = 2.0
OTHER_CPU_MASK_STD_TOL = 0.15


def run_seed(seed: int, out: Path, extra: list[str] | None = None) -> dict:
    """One main job in a fresh interpreter, as typed (the user's environment, nothing set by us)."""
    cmd = [sys.executable, "-m", "automix_lite", "train", "--preset", "quick", "--out", str(out), "--seed", str(seed),
           *(extra or [])]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    t0, r0 = time.time(), os.times()
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r1 = os.times()
    m = json.loads((out / "metrics.json").read_text())
    d = m.get("diagnostics", {})
    return {"seed": seed, "wall_s": time.time() - t0, "load_at_start": load,
            "cpu_s": (r1.children_user - r0.children_user) + (r1.children_system - r0.children_system),
            "final_top1": m["final_top1"], "diagnostics": d, "omp_wait_policy": m["environment"].get("omp_wait_policy")}


def _drop(d: dict) -> str:
    if d.get("max_top1_drop") is None:
        return "—"
    return f"{d['max_top1_drop']:.1f} ({d.get('max_drop_head')}, epoch {d.get('max_drop_epoch')})"


def markdown(result: dict) -> str:
    p = result["provenance"]
    lines = [f"Provenance: {p['hardware']['cpu_model']}, {p['hardware']['cpu_count_os']} cores, torch "
             f"{p['versions']['torch']}, timm {p['versions']['timm']}, commit {result['commit']}, {p['date_utc']}.",
             "Command per seed: `python -m automix_lite train --preset quick --out <dir>/s<S> --seed S`.", "",
             "| seed | wall (s) | CPU (s) | load at start | final top-1 % one_k / mix_k / one_q / mix_q | mask std | "
             "mask diversity | max top-1 drop (pts) |", "|---:|---:|---:|---:|---|---:|---:|---|"]
    for r in result["runs"]:
        t = r["final_top1"]
        top = " / ".join(f"{t[h]:.1f}" for h in ("one_k", "mix_k", "one_q", "mix_q"))
        d = r["diagnostics"]
        lines.append(f"| {r['seed']} | {r['wall_s']:.0f} | {r['cpu_s']:.0f} | {r['load_at_start']:.2f} | {top} | "
                     f"{d.get('mask_std', float('nan')):.3f} | {d.get('mask_diversity', float('nan')):.3f} | "
                     f"{_drop(d)} |")
    return "\n".join(lines) + "\n"


def compare(stored: dict, fresh: dict, same_cpu: bool = True) -> list[str]:
    """Differences beyond the tolerances between a stored run and a fresh one of the same seed (the wider
    ``OTHER_CPU_*`` tolerances when the fresh run is on another CPU model than the stored one)."""
    top1_tol, std_tol = (TOP1_TOL, MASK_STD_TOL) if same_cpu else (OTHER_CPU_TOP1_TOL, OTHER_CPU_MASK_STD_TOL)
    problems = []
    for head, want in stored["final_top1"].items():
        got = fresh["final_top1"].get(head)
        if got is None or abs(got - want) > top1_tol:
            problems.append(f"top-1 {head}: stored {want}, now {got} (tolerance {top1_tol})")
    want, got = stored["diagnostics"].get("mask_std"), fresh["diagnostics"].get("mask_std")
    if want is not None and (got is None or abs(got - want) > std_tol):
        problems.append(f"mask std: stored {want}, now {got} (tolerance {std_tol})")
    return problems


def cpu_model() -> str:
    """This machine's CPU model, as the results' provenance records it (benchmarks/provenance.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from provenance import cpu_model as _cpu_model  # imports torch: only when a check needs it

    return _cpu_model()


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--check", action="store_true", help="seed 0 against the stored results; exit 1 on a move")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--figure", type=Path, default=REPO / "docs" / "quick_masks.png",
                   help="where seed 0's masks.png goes (the README shows it); 'none' to skip")
    args = p.parse_args(argv)
    args.figure = None if str(args.figure).lower() == "none" else args.figure
    with tempfile.TemporaryDirectory() as tmp:
        if args.check:
            rec = json.loads(args.results.read_text())
            stored = next(r for r in rec["runs"] if r["seed"] == 0)
            same_cpu = rec["provenance"]["hardware"]["cpu_model"] == cpu_model()
            problems = compare(stored, run_seed(0, Path(tmp) / "s0"), same_cpu)
            print("\n".join(problems) or f"main job seed 0 matches {args.results} within the tolerances")
            return 1 if problems else 0
        runs = [run_seed(s, Path(tmp) / f"s{s}") for s in args.seeds]
        if args.figure is not None and 0 in args.seeds:  # the README's picture is seed 0's masks.png
            shutil.copyfile(Path(tmp) / "s0" / "masks.png", args.figure)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import torch

    from provenance import provenance

    result = {"benchmark": "main_job", "commit": _commit(), "runs": runs,
              "tolerances": {"top1_points": TOP1_TOL, "mask_std": MASK_STD_TOL},
              "provenance": provenance(torch.device("cpu"), args.seeds[0],
                                       None if argv is None else [sys.argv[0], *argv])}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=1))
    md = markdown(result)
    args.results.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
