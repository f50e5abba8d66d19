"""The fast paths' acceptance on a real GPU (a T4 or an H100), in one offline call of at most 8 minutes.

Checks, most important first, each PASS / FAIL / SKIP with its numbers; exit status 1 on any FAIL. Every check
measures something that can fail (a SKIP says why it could not run: no CUDA, or ``--budget`` spent):

1. ``amp_policy``: ``amp='auto'`` gives the dtype the GPU model should get (a table of known GPUs, else the
   compute capability: bf16 from 8.0), and an autocast matmul really computes in it.
2. ``fp32_equality`` (TF32 off): the fused pass vs the separate passes (losses, gradient, update; and pooled
   BatchNorm must *fail* the same comparison), the graphed step vs the eager step over 12 steps with
   ``switch_off``, an lr change and a save / load in the middle.
3. ``train_e2e``: ``train()`` for 2 epochs on each path: the default (fp16 / bf16, fused, data on the device,
   each asserted in ``fast_paths``), separate, graph, graph fed by a pinned ``DataLoader`` with workers (capture
   while the pin thread works). A run stopped mid-epoch and resumed must equal the uninterrupted one, with
   cuDNN deterministic; where two uninterrupted runs already differ (an op without a deterministic kernel), the
   resume may differ by at most 10x their difference.
4. ``no_host_sync``: ``torch.cuda.set_sync_debug_mode("error")`` around 3 fused steps, 20 augmented device-loader
   batches and 6 graphed steps (which must change the weights); a deliberate ``.item()`` must raise (the
   detector works).
5. ``low_precision``: fp16 + GradScaler and bf16 (where native) steps are finite and near fp32.
6. ``fallback``: a fused pass broken by injection makes ``train()`` fall back with one warning.
7. ``cuda_tests``: the repository's CUDA-only tests (names with "cuda"): all must run, none skip.
8. ``speed_memory``: step time and peak memory per path (``gpu_step.time_path``); an error is a FAIL (only the
   graph under fp16, a T4, is an expected n/a). ``defaults``: the eager step in NCHW, channels-last and
   channels-last + ``cudnn.benchmark``, the measurement that decides the CNN presets' defaults.

``--budget`` (seconds, default 420): a check whose estimate exceeds what is left is SKIPped, and the results
(``<out>/gpu_accept_<gpu>.json`` and ``.md``, with provenance) are rewritten after every check, so a killed call
still leaves its verdicts. ``--dry-run``: every check tiny on the CPU (graphs as eager twins, CUDA-only parts
SKIP), what CI runs (``tests/test_benchmarks.py``). On a GPU machine::

    python benchmarks/gpu_accept.py --out benchmarks/results
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see speed.py
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (train_e2e), before CUDA starts

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_accept_checks import CHECKS, ESTIMATE_S, _result  # noqa: E402,F401
from gpu_common import REPO, Budget, git_info  # noqa: E402
from provenance import provenance  # noqa: E402


def gpu_slug(dev: torch.device, dry_run: bool) -> str:
    """``dryrun_cpu``, or the GPU's name in lower case ('t4', 'h100_80gb_hbm3'), without the vendor."""
    if dry_run or dev.type != "cuda":
        return "dryrun_cpu" if dry_run else "cpu"
    name = torch.cuda.get_device_name(dev).lower().replace("nvidia", "").replace("tesla", "")
    return re.sub(r"[^a-z0-9]+", "_", name).strip("_") or "cuda"


def run_checks(args, dev, write) -> dict:
    """Every selected check in order, each skipped when its estimate exceeds the budget left; ``write`` after each."""
    budget, scale = Budget(args.budget), 0.05 if args.dry_run else 1.0
    results = {}
    for name, check in CHECKS.items():
        if args.only is not None and name not in args.only:
            continue
        need = ESTIMATE_S[name] * scale
        if budget.left() < need:
            results[name] = _result("SKIP", why=f"budget: {budget.left():.0f} s left, the check needs ~{need:.0f} s")
        else:
            t0 = time.time()
            try:
                results[name] = check(args, dev, budget)
            except Exception as e:  # noqa: BLE001 - a crashing check is a FAIL with its reason, the others still run
                results[name] = _result("FAIL", error=f"{type(e).__name__}: {e}"[:2000])
            results[name]["seconds"] = round(time.time() - t0, 1)
        print(f"[gpu_accept] {name:14s} {results[name]['status']}  ({results[name].get('seconds', 0)} s)", flush=True)
        write(results)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="every check tiny on the CPU (what CI runs)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--budget", type=float, default=420.0, help="seconds for all checks (default 420: 7 minutes)")
    p.add_argument("--only", nargs="*", default=None, choices=sorted(CHECKS))
    args = p.parse_args(argv)
    dev = torch.device("cpu") if args.dry_run or not torch.cuda.is_available() else torch.device("cuda", 0)
    if dev.type == "cpu" and not args.dry_run:
        print("[gpu_accept] no CUDA device: nothing to accept (use --dry-run to exercise the script)", file=sys.stderr)
        return 2
    stem = f"gpu_accept_{gpu_slug(dev, args.dry_run)}"
    head = _header(args, dev, argv)

    def write(results: dict) -> None:
        _write(args.out, stem, head, results)

    results = run_checks(args, dev, write)
    return 1 if any(r["status"] == "FAIL" for r in results.values()) else 0


def _header(args, dev, argv) -> dict:
    cmd = None if argv is None else [sys.argv[0]] + list(argv)
    prov = provenance(dev, 0, cmd)
    prov["git"] = git_info()
    prov["budget_s"] = args.budget
    if dev.type == "cuda":
        cap = torch.cuda.get_device_capability(dev)
        prov["cuda"] = {"name": torch.cuda.get_device_name(dev), "capability": f"{cap[0]}.{cap[1]}",
                        "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                        "memory_gib": round(torch.cuda.get_device_properties(dev).total_memory / 2**30, 1)}
    return {"benchmark": "gpu_accept", "dry_run": args.dry_run, "provenance": prov}


def _write(out: Path, stem: str, head: dict, results: dict) -> None:
    """The JSON and the Markdown summary, rewritten after every check (partial results survive a killed call)."""
    out.mkdir(parents=True, exist_ok=True)
    doc = {**head, "complete": False, "results": results}
    doc["complete"] = len(results) == len(CHECKS)
    tmp = out / f".{stem}.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    tmp.replace(out / f"{stem}.json")
    prov = head["provenance"]
    gpu = prov.get("cuda", {}).get("name", "dry run on the CPU")
    lines = [f"# GPU acceptance: {gpu}", "",
             f"Provenance: commit {prov['git']['commit']} (dirty: {prov['git']['dirty']}), torch "
             f"{prov['versions']['torch']}, CUDA {prov.get('cuda', {}).get('torch_cuda')}, {prov['date_utc']}, "
             f"command `{prov['command']}`, budget {prov['budget_s']:.0f} s.", "",
             "| check | status | seconds | detail |", "|---|---|---|---|"]
    for k, v in results.items():
        detail = v.get("why") or v.get("error") or v.get("failed") or ""
        lines.append(f"| {k} | {v['status']} | {v.get('seconds', '')} | {str(detail)[:300]} |")
    if not doc["complete"]:
        lines += ["", f"Incomplete: {len(results)} of {len(CHECKS)} checks recorded."]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
