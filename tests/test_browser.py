"""The mask explorer rendered in a real browser: JupyterLab + headless Chromium driven by Selenium.

Starts ``jupyter lab`` on a free localhost port with a random token, opens a copy of
``notebooks/04_mask_explorer.ipynb`` in smoke mode, runs every cell from the Run menu, then changes the method in
the dropdown and drags the λ slider, and asserts from screenshots of the explorer's output that the rendered image
changes each time. Nothing is downloaded: the browser and its driver are Debian's ``chromium`` and
``chromium-driver`` (``/usr/bin/chromium``, ``/usr/bin/chromedriver``). Skips, with the reason, where either or
Selenium or JupyterLab is missing. ``AUTOMIX_BROWSER_SHOTS=<folder>`` keeps the screenshots (docs/explorer.png
comes from there).
"""
from __future__ import annotations

import io
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "04_mask_explorer.ipynb"
CHROMIUM = next((p for p in (shutil.which("chromium"), "/usr/bin/chromium") if p and os.path.exists(p)), None)
CHROMEDRIVER = next((p for p in (shutil.which("chromedriver"), "/usr/bin/chromedriver") if p and os.path.exists(p)),
                    None)
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1500,1100")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: apt-get install chromium chromium-driver"),
    pytest.mark.skipif(CHROMEDRIVER is None, reason="no chromedriver: apt-get install chromium-driver"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on 127.0.0.1 serving a copy of the notebook (the copy may be autosaved freely)."""
    pytest.importorskip("jupyterlab", reason="JupyterLab is in the dev extra: pip install -e '.[dev]'")
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    port, token = _free_port(), secrets.token_hex(16)
    # render every cell (JupyterLab 4 otherwise keeps cells outside the viewport out of the page)
    tracker = tmp_path / "settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text('{"windowingMode": "none"}')
    env = {**os.environ, "AUTOMIX_SMOKE": "1", "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "PYTHONPATH": os.pathsep.join([str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                                                       if p])}
    log = open(tmp_path / "lab.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", f"--ServerApp.port={port}",
         "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={root}", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         "--LabApp.extension_manager=readonly",  # no PyPI look-ups from the extension manager
         f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}", f"--LabApp.user_settings_dir={tmp_path / 'settings'}"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5).read()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail("jupyter lab did not start:\n" + (tmp_path / "lab.log").read_text()[-3000:])
                time.sleep(1)
        yield {"url": url, "token": token, "log": tmp_path / "lab.log"}
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="Selenium is in the dev extra")
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look anything up
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS + (f"--user-data-dir={tmp_path / 'chromium-profile'}",):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, what: str, condition, timeout: float = 180.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = condition()
        except Exception:  # noqa: BLE001 - stale or not-yet-rendered elements: poll again
            value = None
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _shot(element) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(element.screenshot_as_png)).convert("RGB")).astype(np.int16)


def _output_image(driver):
    """The figure the explorer drew: the <img> inside its ipywidgets Output area."""
    from selenium.webdriver.common.by import By

    imgs = [e for e in driver.find_elements(By.CSS_SELECTOR, ".widget-output img, .jupyter-widgets-output-area img")
            if e.is_displayed()]
    return imgs[0] if imgs and imgs[0].size["width"] > 100 else None


def _changed_shot(driver, before: np.ndarray, what: str) -> np.ndarray:
    """Wait until the explorer's image differs from ``before`` (the kernel recomputes, the output redraws)."""
    def differs():
        img = _output_image(driver)
        if img is None:
            return None
        now = _shot(img)
        return (now,) if now.shape != before.shape or np.abs(now - before).max() > 40 else None

    return _wait(driver, what, differs, timeout=90)[0]


def _control(driver, kind: str, label: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.XPATH, f"//div[contains(@class,'{kind}')][.//label[normalize-space()='{label}']]")


def _run_all_cells(driver, tries: int = 3) -> None:
    """Run > Run All Cells, through the menu a user clicks; clicked again if no cell starts (an early click can
    land before the notebook panel takes the menu's commands)."""
    from selenium.webdriver.common.by import By

    def started():
        prompts = [e.get_attribute("textContent") for e in driver.find_elements(By.CSS_SELECTOR, ".jp-InputPrompt")]
        return any("[*]" in p or any(ch.isdigit() for ch in p) for p in prompts)

    for _ in range(tries):
        _wait(driver, "the notebook to take focus", lambda: driver.find_element(
            By.CSS_SELECTOR, ".jp-Notebook .jp-Cell .jp-InputPrompt").click() or True, timeout=60)
        _wait(driver, "the Run menu", lambda: [e for e in driver.find_elements(
            By.CSS_SELECTOR, ".lm-MenuBar-itemLabel") if e.text.strip() == "Run"])[0].click()
        _wait(driver, "Run All Cells", lambda: [e for e in driver.find_elements(
            By.CSS_SELECTOR, ".lm-Menu-item") if e.text.strip().startswith("Run All Cells")])[0].click()
        try:
            _wait(driver, "a cell to start", started, timeout=30)
            return
        except AssertionError:
            continue
    raise AssertionError(f"Run All Cells started nothing in {tries} tries")


def test_explorer_renders_and_reacts_in_chromium(lab, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    shots = Path(os.environ.get("AUTOMIX_BROWSER_SHOTS", tmp_path / "shots"))
    shots.mkdir(parents=True, exist_ok=True)
    browser.get(f"{lab['url']}/lab/tree/{NOTEBOOK.name}?reset&token={lab['token']}")
    _wait(browser, "the notebook and an idle kernel", lambda: browser.find_elements(
        By.CSS_SELECTOR, ".jp-Notebook .jp-Cell") and browser.find_elements(
        By.CSS_SELECTOR, ".jp-Notebook-ExecutionIndicator[data-status='idle']"), timeout=120)
    _run_all_cells(browser)
    _wait(browser, "the last cell's output", lambda: any(
        "No OpenMixup checkpoint given" in e.get_attribute("textContent")
        for e in browser.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output")),
        timeout=300)
    errors = browser.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    assert not [t for t in (e.get_attribute("textContent") for e in errors) if "Traceback" in t or "Error" in t]
    explorer = _wait(browser, "the explorer widget", lambda: browser.find_element(
        By.XPATH, "//div[contains(@class,'widget-vbox')][.//select][.//div[contains(@class,'widget-hslider')]]"))
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'});", explorer)
    img = _wait(browser, "the explorer's figure", lambda: _output_image(browser))
    first = _shot(img)

    # 1. another method in the dropdown: a CutMix box instead of the AutoMix mask the notebook's code left
    Select(_control(browser, "widget-dropdown", "method").find_element(By.TAG_NAME, "select")
           ).select_by_visible_text("cutmix")
    cutmix = _changed_shot(browser, first, "the image after choosing cutmix")

    # 2. drag the λ slider's handle to the right: a larger own area
    slider = _control(browser, "widget-hslider", "λ")
    readout = slider.find_element(By.CSS_SELECTOR, ".widget-readout").text
    handle = slider.find_element(By.CSS_SELECTOR, ".noUi-handle, .ui-slider-handle")
    ActionChains(browser).click_and_hold(handle).move_by_offset(25, 0).release().perform()
    _wait(browser, "the λ readout to change", lambda: slider.find_element(
        By.CSS_SELECTOR, ".widget-readout").text != readout, timeout=30)
    moved = _changed_shot(browser, cutmix, "the image after moving λ")
    assert float(slider.find_element(By.CSS_SELECTOR, ".widget-readout").text) > float(readout)

    from PIL import Image

    for name, arr in (("first", first), ("cutmix", cutmix), ("moved", moved)):
        Image.fromarray(arr.astype(np.uint8)).save(shots / f"explorer_{name}.png")
    explorer.screenshot(str(shots / "explorer.png"))
    assert (shots / "explorer.png").stat().st_size > 10_000
