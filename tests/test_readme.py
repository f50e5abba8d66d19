"""The README's two commands stay true: CI runs exactly its test command; the CLI accepts its main command."""
import re
import shlex
from pathlib import Path

import pytest
import yaml

from automix_lite.__main__ import build_parser

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands():
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    return [line.split("#")[0].strip() for line in block.strip().splitlines()]


def _slow_command() -> str:
    """The README's one line on the slow suites quotes the command CI runs for them."""
    found = re.findall(r"`(AUTOMIX_SMOKE=1 python -m pytest -m slow)`", (ROOT / "README.md").read_text())
    assert found, "README does not say how to run the slow suites"
    return found[0]


def test_ci_lints_then_runs_the_readme_test_command_then_the_slow_suites():
    main_cmd, test_cmd = _readme_commands()[:2]
    assert "pytest" in test_cmd and "AUTOMIX_SMOKE=1" in test_cmd
    ci_lines = [ln.strip() for ln in (ROOT / ".ci/run").read_text().splitlines() if ln.strip()]
    slow_cmd = _slow_command()
    assert test_cmd in ci_lines and slow_cmd in ci_lines, (test_cmd, slow_cmd)
    fast_at, slow_at = ci_lines.index(test_cmd), ci_lines.index(slow_cmd)
    assert ci_lines.index("ruff check .") < fast_at < slow_at
    # the two marker expressions split the suite in two: nothing is in neither run, nothing in both
    fast_m, slow_m = (shlex.split(c)[shlex.split(c).index("-m", 3) + 1] for c in (test_cmd, slow_cmd))
    assert fast_m == f"not {slow_m}", (fast_m, slow_m)
    # the runs write their records to AUTOMIX_RUN_LOG, and the job ends with the check of the two runs together
    assert ci_lines[-1] == 'python tests/conftest.py "$AUTOMIX_RUN_LOG"'
    assert any(ln.startswith("export AUTOMIX_RUN_LOG") for ln in ci_lines[:fast_at])
    assert any("--durations=" in ln and ln.startswith("export PYTEST_ADDOPTS") for ln in ci_lines[:fast_at])


def _record(markexpr, selected, collected=10, passed=None, skipped=0, failed=0, **suites):
    return {"markexpr": markexpr, "selected": selected, "collected": collected, "passed": selected - skipped - failed
            if passed is None else passed, "failed": failed, "skipped": skipped, "error": 0,
            "suites": {s: suites.get(s, []) for s in ("browser", "floor")}}


def test_ci_summary_fails_a_lost_test_a_failure_and_a_promised_suite_that_skipped_or_did_not_run():
    from conftest import ci_summary

    fast, slow = _record("not slow", 7, floor=["passed"]), _record("slow", 3, browser=["passed"])
    lines, problems = ci_summary([fast, slow], {"browser", "floor"})
    assert problems == [] and "together: 10 tests ran, 10 passed" in lines
    assert ci_summary([fast, _record("slow", 2, browser=["passed"])], set())[1]  # one test ran in neither
    assert ci_summary([fast], set())[1]  # the slow run is missing
    assert ci_summary([fast, _record("slow", 3, failed=1, browser=["failed"])], set())[1]
    _, problems = ci_summary([fast, _record("slow", 3, skipped=1, browser=["skipped"])], {"browser", "floor"})
    assert problems == ["required suite 'browser': 1 skipped"]
    _, problems = ci_summary([fast, _record("slow", 3)], {"browser"})
    assert problems == ["required suite 'browser': did not run"]


def test_ruff_is_configured_installed_by_the_dev_extra_and_run_by_ci():
    text = (ROOT / "pyproject.toml").read_text()
    extras = re.search(r"^dev = \[(.*)\]$", text, re.M).group(1)
    assert '"ruff' in extras
    assert "[tool.ruff.lint]" in text and re.search(r'^select = \[.*"F".*"I".*\]', text, re.M)


def test_readme_main_command_installs_then_runs_the_offline_quick_preset():
    install, run = (part.strip() for part in _readme_commands()[0].split("&&"))
    assert shlex.split(install)[:3] == ["pip", "install", "-e"] and shlex.split(install)[3].startswith(".")
    # the first command installs what the second needs: the same extra as .ci/run, which runs the second
    ci_installs = re.findall(r'pip" install -q -e "([^"]+)"', (ROOT / ".ci/run").read_text())
    assert ci_installs and shlex.split(install)[3] in ci_installs, (install, ci_installs)
    extras = re.search(r"^dev = \[(.*)\]$", (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert '"pytest"' in extras and '"nbval"' in extras
    argv = shlex.split(run)
    assert argv[:3] == ["python", "-m", "automix_lite"]
    args = build_parser().parse_args(argv[3:])
    assert args.command == "train" and args.preset == "quick"


def test_environment_file_installs_the_dev_extra_with_pytorch_from_conda_forge():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["name"] == "automix-lite"
    assert env["channels"] == ["conda-forge"]  # the pytorch channel is deprecated (pytorch/pytorch#138506)
    names = [d.split("=")[0].split(">")[0].split("<")[0].strip() for d in env["dependencies"] if isinstance(d, str)]
    assert {"pytorch", "torchvision"} <= set(names)
    assert not any(isinstance(d, str) and "::" in d for d in env["dependencies"])  # no per-package channel
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert any(".[dev]" in p for p in pip)


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path, monkeypatch):
    code = re.search(r"## Use it\n\n```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)  # its run folder lands in tmp_path/runs
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert (tmp_path / "runs/demo/metrics.json").is_file()
    assert scope["mask"].shape == (8, 2, 32, 32)


def test_ci_provides_the_browser_and_the_colab_widgets_environment():
    """The browser test and the ipywidgets 7.7.1 test skip without their tools: CI must install them."""
    lines = (ROOT / ".ci/run").read_text().splitlines()
    body = "\n".join(lines[:-1])
    assert "apt-get install -y -q chromium chromium-driver" in body
    assert "ipywidgets==7.7.1" in body and "--target" in body
    assert any(line.startswith("export AUTOMIX_IPYWIDGETS7=") for line in lines[:-1])
    extras = re.search(r"^dev = \[(.*)\]$", (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert all(f'"{pkg}"' in extras for pkg in ("jupyterlab", "selenium", "nbval", "nbclient"))
