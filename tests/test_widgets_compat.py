"""The explorer under ipywidgets 7.7.1, the version Colab ships (the main environment has 8.x).

``.ci/run`` installs ipywidgets 7.7.1 (with the widgetsnbextension and jupyterlab_widgets it pins) into a folder of
its own, ``pip install --no-deps --target DIR``, and exports ``AUTOMIX_IPYWIDGETS7=DIR``. This test prepends DIR to
``PYTHONPATH`` and runs the widget tests and the explorer notebook (smoke mode, nbval) in a subprocess, so the rest
of the suite keeps ipywidgets 8. Skips, with the reason, when the folder is not there.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IPYW7 = os.environ.get("AUTOMIX_IPYWIDGETS7", "")
INSTALL = ("pip install --no-deps --target DIR ipywidgets==7.7.1 widgetsnbextension==3.6.1 jupyterlab_widgets==1.1.1 "
           "ipython_genutils==0.2.0, then AUTOMIX_IPYWIDGETS7=DIR (what .ci/run does)")

pytestmark = pytest.mark.skipif(not IPYW7 or not (Path(IPYW7) / "ipywidgets").is_dir(),
                                reason=f"no ipywidgets 7.7.1 environment: {INSTALL}")


def _env() -> dict:
    path = [IPYW7, str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path), "AUTOMIX_SMOKE": "1"}


def test_the_second_environment_really_has_ipywidgets_7_7_1():
    out = subprocess.run([sys.executable, "-c", "import ipywidgets; print(ipywidgets.__version__, ipywidgets.__file__)"],
                         env=_env(), capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "7.7.1" and out[1].startswith(IPYW7)


@pytest.mark.slow
def test_widget_tests_and_explorer_notebook_pass_with_ipywidgets_7_7_1():
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
           "--nbval-lax", "--nbval-current-env", "-W", "ignore::DeprecationWarning",
           "tests/test_widgets.py", "notebooks/04_mask_explorer.ipynb"]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout.split("passed")[-1]
