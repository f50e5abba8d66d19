"""A small mutation check: apply named mutants to the library, one at a time, and see which the tests kill.

Each mutant is a one-line change of the algorithm core that a test should notice (issue 23 lists the ones that
survived the suite once). For each: copy the repository's ``automix_lite/`` and ``tests/`` to a temporary folder,
apply the change, run the named test files there, and record "killed" (a test failed) or "SURVIVED". Not run in
CI (it runs the tests several times); run it after changing the core or its tests::

    python benchmarks/mutants.py                 # every mutant
    python benchmarks/mutants.py --only ensemble_raw_logits
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


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
           "mask_bb = self.mix_block(z, d.lam_bb, perm_bb, size).detach()",
           "mask_bb = self.mix_block(z, d.lam_bb, perm_bb, size)", ("tests/test_automix.py",)),
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


def run_mutant(m: Mutant, timeout: int) -> dict:
    """Apply ``m`` in a copy of the package and run its tests; killed = the tests failed."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copytree(REPO / "automix_lite", root / "automix_lite")
        shutil.copytree(REPO / "tests", root / "tests")
        shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
        target = root / "automix_lite" / m.path
        text = target.read_text()
        if m.old and text.count(m.old) != 1:
            return {"mutant": m.name, "result": f"NOT APPLIED ({text.count(m.old)} matches in {m.path})"}
        target.write_text(text.replace(m.old, m.new) if m.old else text)
        env = {**os.environ, "PYTHONPATH": str(root), "AUTOMIX_SMOKE": "1"}
        cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:nbval", "-o", "addopts=", *m.tests]
        try:
            proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"mutant": m.name, "result": "killed (timeout)"}
        killed = proc.returncode != 0
        last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        return {"mutant": m.name, "result": "killed" if killed else "SURVIVED", "tests": list(m.tests),
                "summary": last}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="*", default=None, help="mutant names")
    p.add_argument("--timeout", type=int, default=900)
    p.add_argument("--out", type=Path, default=None, help="write the report as JSON here")
    args = p.parse_args(argv)
    chosen = [m for m in MUTANTS if args.only is None or m.name in args.only]
    # control: the same tests on the unchanged copy must pass, or "killed" would mean nothing
    control = run_mutant(Mutant("control (no change)", "core/automix.py", "", "",
                                tuple(dict.fromkeys(t for m in chosen for t in m.tests))), args.timeout)
    print(f"{'control (no change)':32s} {'passes' if control['result'] == 'SURVIVED' else 'FAILS: ' + control['summary']}")
    if control["result"] != "SURVIVED":
        return 2
    report = []
    for m in chosen:
        r = run_mutant(m, args.timeout)
        print(f"{m.name:32s} {r['result']}  {r.get('summary', '')}", flush=True)
        report.append(r)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return 1 if any(r["result"] != "killed" and not r["result"].startswith("killed") for r in report) else 0


if __name__ == "__main__":
    sys.exit(main())
