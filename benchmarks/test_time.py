"""Wall time of the README's test command (the fast suite) beside the whole suite, on this machine (issue 30).

    python benchmarks/test_time.py                      # the fast suite, then everything (-m not given)
    python benchmarks/test_time.py --suites fast        # the fast suite alone

Each suite runs as a subprocess from the repository root, exactly as the README types it (``AUTOMIX_SMOKE=1 python
-m pytest ...``, with this interpreter first on ``PATH``), plus ``--durations=15``. Recorded per suite: wall seconds,
CPU seconds of the process tree (user + system of the reaped descendants: pytest, its kernels, its subprocesses),
the CPU the *other* processes of the machine used meanwhile (from ``/proc/stat``: a shared machine's contention, in
cores), the load average before and after, pytest's summary line and its slowest tests. The budget is 300 s wall
for the fast suite on an idle 2-core machine; a run beside other work says so in its "others" column.
Writes ``test_time_<tag>.{json,md}`` to ``--out`` (default ``benchmarks/results``). Not a test: it times tests.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 300.0


def readme_test_command() -> str:
    """The README's second command, the fast suite (tests/test_readme.py keeps .ci/run's equal to it)."""
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    return block.strip().splitlines()[1].split("#")[0].strip()


def suites() -> dict[str, str]:
    fast = readme_test_command()
    words = shlex.split(fast)
    at = len(words) - 1 - words[::-1].index("-m")  # the marker option (the first -m is python's)
    everything = shlex.join(words[:at] + words[at + 2:])  # the same command without its marker expression
    return {"fast": fast, "slow": shlex.join(words[:at] + ["-m", "slow"] + words[at + 2:]), "all": everything}


def _busy_jiffies() -> int:
    """All CPUs' non-idle time since boot, in clock ticks (/proc/stat's first line)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4]  # minus idle and iowait


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def parse_output(text: str) -> dict:
    """pytest's final summary line and its ``--durations`` rows ('12.34s call tests/x.py::t')."""
    summary = next((ln.strip("= ").strip() for ln in reversed(text.splitlines())
                    if re.search(r"\d+ (passed|failed|error)", ln) and " in " in ln), "")
    slowest = [{"s": float(m.group(1)), "when": m.group(2), "test": m.group(3)}
               for m in re.finditer(r"^\s*([\d.]+)s (setup|call|teardown)\s+(\S+)", text, re.M)]
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?)", summary)}
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", text, re.M)  # which tests, so a slow run is not repeated
    return {"summary": summary, "counts": counts, "failed": failed, "slowest": slowest}


def time_suite(name: str, command: str, durations: int = 15) -> dict:
    """Run one suite's command; wall and CPU seconds, the machine's other load, pytest's summary."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    full = f"{command} --durations={durations}"
    load0, cpu0, busy0, t0 = os.getloadavg(), _children_cpu(), _busy_jiffies(), time.perf_counter()
    proc = subprocess.run(["bash", "-c", full], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    cpu = _children_cpu() - cpu0
    machine_cpu = (_busy_jiffies() - busy0) / os.sysconf("SC_CLK_TCK")
    out = parse_output(proc.stdout)
    print(f"[test_time] {name}: {wall:.0f} s wall, {cpu:.0f} s CPU: {out['summary']}", file=sys.stderr)
    return {"command": command, "returncode": proc.returncode, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "others_cores": round(max(machine_cpu - cpu, 0.0) / wall, 2),
            "loadavg_before": [round(x, 2) for x in load0], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            **out}


def write_markdown(rec: dict, path: Path) -> None:
    prov = rec["provenance"]
    lines = [f"# Test-suite wall time ({prov['date_utc']})", "",
             f"`{prov['command']}` on {prov['hardware']['cpu_model']} ({prov['hardware']['cpus_usable']} CPUs), "
             f"torch {prov['versions']['torch']}, Python {prov['versions']['python']}. Budget: the fast suite in "
             f"at most {BUDGET_S:.0f} s wall on an idle 2-core machine. *others* is the CPU the machine's other "
             "processes used meanwhile, in cores (0 = idle machine; the wall times grow with it).", "",
             "| suite | command | wall s | CPU s | others (cores) | load before → after | pytest |",
             "|---|---|---|---|---|---|---|"]
    for name, r in rec["suites"].items():
        lines.append(f"| {name} | `{r['command']}` | {r['wall_s']:.0f} | {r['cpu_s']:.0f} | {r['others_cores']:.2f} "
                     f"| {r['loadavg_before'][0]:.1f} → {r['loadavg_after'][0]:.1f} | {r['summary']} |")
    for name, r in rec["suites"].items():
        lines += ["", f"## Slowest in `{name}`", "", "| s | phase | test |", "|---|---|---|"]
        lines += [f"| {row['s']:.1f} | {row['when']} | `{row['test']}` |" for row in r["slowest"]]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--suites", nargs="+", choices=("fast", "slow", "all"), default=["fast", "all"])
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--tag", default="cpu")
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import torch

    from provenance import provenance

    rec = {"benchmark": "test_time", "budget_s": BUDGET_S,
           "provenance": provenance(torch.device("cpu"), seed=0, argv=None if argv is None else
                                    ["benchmarks/test_time.py", *argv]),
           "suites": {}}
    commands = suites()
    for name in args.suites:
        rec["suites"][name] = time_suite(name, commands[name])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"test_time_{args.tag}.json").write_text(json.dumps(rec, indent=1) + "\n")
    write_markdown(rec, args.out / f"test_time_{args.tag}.md")
    return rec


if __name__ == "__main__":
    main()
