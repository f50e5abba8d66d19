"""A small mutation check: apply named mutants to the library, one at a time, and see which the tests kill.

Each mutant is a one-line change of the algorithm core that a test should notice (issue 23 lists the ones that
survived the suite once). For each: copy the repository (every file git tracks, or would track: what a clean clone
holds, uncommitted edits included) to a temporary folder, apply the change, run the named test files there, and
record "killed" (a test failed) or "SURVIVED". A control run of the same tests on the unchanged copy must pass
first, or "killed" would mean nothing. CI's slow suite runs it (tests/test_mutants.py); run it after changing the
core or its tests::

    python benchmarks/mutants.py                 # every mutant; writes benchmarks/results/mutants.json
    python benchmarks/mutants.py --only ensemble_raw_logits --out /tmp/m.json
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "mutants.json"
# tests of this script, left out inside a copy: the first fails in every mutated copy by design (the control runs
# it), the second would run the whole script again there
APPLIES_ONCE = "tests/test_mutants.py::test_every_named_mutant_still_applies_once"
SCRIPT_TEST = "tests/test_mutants.py::test_the_script_passes_its_control_and_kills_every_mutant"


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # file under automix_lite/
    old: str  # exact text, present once
    new: str
    tests: tuple[str, ...]  # test files (or node ids) that should kill it


MUTANTS = (
    Mutant("auto_pass_fused_on_cpu", "fast/step.py",
           'online_pass == "fused" or (online_pass == "auto" and torch.device(device).type == "cuda")',
           'online_pass in ("fused", "auto")', ("tests/test_mutants.py", "tests/test_fused.py")),
    Mutant("ensemble_raw_logits", "core/automix.py", "o.float().pow(2)", "o.float()",
           ("tests/test_mutants.py", "tests/test_automix.py")),
    Mutant("mix_block_skips_att_norm", "core/mixblock.py", "return self.norm(self.conv(x))", "return self.conv(x)",
           ("tests/test_mutants.py", "tests/test_mixblock.py")),
    Mutant("core_mask_not_detached_for_online", "core/automix.py",
           "mask_bb = mask_bb.detach() if ab.detach_mask_bb else mask_bb",
           "mask_bb = mask_bb", ("tests/test_automix.py",)),
    Mutant("fast_mask_not_detached_for_online", "fast/step.py",
           "mask_bb = model.mix_block(z, lam_bb, perm_bb, size).detach()",
           "mask_bb = model.mix_block(z, lam_bb, perm_bb, size)", ("tests/test_automix.py",)),
    Mutant("core_lam_margin_ignored", "core/automix.py", "if d.fallback:", "if False:", ("tests/test_automix.py",)),
    Mutant("fast_lam_margin_ignored", "fast/step.py", "mask_bb = torch.where(dd.flags[0], plain, mask_bb)",
           "mask_bb = mask_bb", ("tests/test_automix.py",)),
    Mutant("ema_wrong_direction", "core/automix.py", "ema_(*ema_tensors(self), m)", "ema_(*ema_tensors(self), 1 - m)",
           ("tests/test_automix.py",)),
    Mutant("graphed_ema_wrong_direction", "fast/graphed.py", '_ema_tensor_(*ema_tensors(self.model), s["ema"])',
           '_ema_tensor_(*ema_tensors(self.model), s["ema"].flip(0))', ("tests/test_graphed.py",)),
    Mutant("mixup_partner_weight", "core/mixing.py", "return (xf * m + xf[perm] * (1 - m)).to(x.dtype)",
           "return (xf * m + xf[perm] * m).to(x.dtype)", ("tests/test_mixing.py",)),
    Mutant("soft_targets_unsmoothed", "core/mixing.py", "return t * (1 - smoothing) + smoothing / num_classes",
           "return t", ("tests/test_transforms.py", "tests/test_mixing.py")),
)


def _repo_files() -> list[str]:
    """What a clean clone of the working tree holds: tracked files and untracked ones git does not ignore."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, check=True).stdout.decode()
    except (OSError, subprocess.CalledProcessError):  # an unpacked archive without .git: every file but caches
        skip = {".git", "__pycache__", ".ruff_cache", ".pytest_cache", "build", "dist"}
        return [p.relative_to(REPO).as_posix() for p in REPO.rglob("*") if p.is_file()
                and not any(part in skip or part.endswith(".egg-info") for part in p.relative_to(REPO).parts)]
    return [f for f in out.split("\0") if f and (REPO / f).is_file()]  # a deleted tracked file is not copied


def copy_repo(dest: Path) -> None:
    """The repository's files under ``dest``, as a fresh clone would lay them out."""
    for rel in _repo_files():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest / rel)


def run_mutant(m: Mutant, timeout: int) -> dict:
    """Apply ``m`` in a copy of the repository and run its tests; killed = the tests failed."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        copy_repo(root)
        target = root / "automix_lite" / m.path
        text = target.read_text()
        if m.old and text.count(m.old) != 1:
            return {"mutant": m.name, "result": f"NOT APPLIED ({text.count(m.old)} matches in {m.path})"}
        target.write_text(text.replace(m.old, m.new) if m.old else text)
        # the copy's package first; CI's list of required optional suites is not for these partial runs
        env = {k: v for k, v in os.environ.items() if k != "AUTOMIX_REQUIRE_SUITES"}
        env.update(PYTHONPATH=str(root), AUTOMIX_SMOKE="1")
        cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:nbval", "-p", "no:cacheprovider", "-o",
               "addopts=", *[f"--deselect={t}" for t in (SCRIPT_TEST, APPLIES_ONCE)[:2 if m.old else 1]], *m.tests]
        try:
            proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"mutant": m.name, "result": "killed (timeout)"}
        killed = proc.returncode != 0
        lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
        last = next((ln for ln in reversed(lines) if " in " in ln and ("passed" in ln or "failed" in ln
                                                                       or "error" in ln)), lines[-1] if lines else "")
        return {"mutant": m.name, "result": "killed" if killed else "SURVIVED", "tests": list(m.tests),
                "summary": last.strip()}


def _provenance(argv: list[str] | None) -> dict:
    import torch

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {"date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M"), "commit": commit,
            "command": " ".join(["python", "benchmarks/mutants.py", *(argv or [])]),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
            "versions": {"python": platform.python_version(), "torch": torch.__version__}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="*", default=None, help="mutant names")
    p.add_argument("--timeout", type=int, default=900)
    p.add_argument("--out", type=Path, default=None, help=f"write the report as JSON here (every mutant: {RESULTS})")
    args = p.parse_args(argv)
    chosen = [m for m in MUTANTS if args.only is None or m.name in args.only]
    unknown = set(args.only or ()) - {m.name for m in MUTANTS}
    if unknown:
        p.error(f"unknown mutants {sorted(unknown)}; known: {[m.name for m in MUTANTS]}")
    out = args.out if args.out is not None else (RESULTS if args.only is None else None)
    # control: the same tests on the unchanged copy must pass, or "killed" would mean nothing
    control = run_mutant(Mutant("control (no change)", "core/automix.py", "", "",
                                tuple(dict.fromkeys(t for m in chosen for t in m.tests))), args.timeout)
    passed = control["result"] == "SURVIVED"
    print(f"{'control (no change)':34s} {'passes' if passed else 'FAILS'}  {control.get('summary', '')}", flush=True)
    if not passed:
        return 2
    report = []
    for m in chosen:
        r = run_mutant(m, args.timeout)
        print(f"{m.name:34s} {r['result']}  {r.get('summary', '')}", flush=True)
        report.append(r)
    if out:
        record = {"provenance": _provenance(argv), "control": {"tests": control["tests"],
                                                              "summary": control["summary"]}, "mutants": report}
        out.write_text(json.dumps(record, indent=1) + "\n")
    return 0 if all(r["result"].startswith("killed") for r in report) else 1


if __name__ == "__main__":
    sys.exit(main())
