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


def test_ci_runs_exactly_the_readme_test_command():
    main_cmd, test_cmd = _readme_commands()[:2]
    ci_lines = [ln.strip() for ln in (ROOT / ".ci/run").read_text().splitlines() if ln.strip()]
    assert ci_lines[-1] == test_cmd
    assert "pytest" in test_cmd and "AUTOMIX_SMOKE=1" in test_cmd


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
