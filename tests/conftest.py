"""Shared test set-up. automix_lite is imported before any test module imports torch, so the test processes run
with OpenMP's passive wait like the CLI (automix_lite/_omp.py) and tests see no 'torch imported first' warning."""
import automix_lite  # noqa: F401  (first: chooses OpenMP's wait policy before torch loads)


def fake_config(tmp_path, name: str = "run", **overrides):
    """A tiny ``quick``-preset config on seeded synthetic data (16 px, 4 classes, resnet_tiny_cifar, CPU, fp32):
    one epoch of two batches in about a second; ``overrides`` change any field."""
    from automix_lite import TrainConfig

    base = dict(dataset="fake", img_size=16, num_classes=4, train_subset=16, val_subset=8, model="resnet_tiny_cifar",
                epochs=1, batch_size=8, workers=0, amp="off", out=str(tmp_path / name))
    return TrainConfig.preset("quick", **{**base, **overrides})


class StepLosses:
    """A callback recording every step's scalar losses (what the resume-equality tests compare); with ``stop``
    it raises ``KeyboardInterrupt`` after that step, as a Ctrl-C would."""

    def __init__(self, stop: int | None = None):
        self.rows, self.stop = {}, stop

    def on_step_end(self, state):
        self.rows[state.step] = dict(state.losses)
        if state.step == self.stop:
            raise KeyboardInterrupt


def pairs(a, b):
    """``zip`` for equality loops that cannot pass vacuously: both sides materialised, equally long, not empty."""
    a, b = list(a), list(b)
    assert len(a) == len(b) and len(a) > 0, f"compared sequences have lengths {len(a)} and {len(b)}"
    return zip(a, b)


# ---------------------------------------------------------------- optional suites: reported, and required in CI
# Suites that need something outside the Python environment. Locally they skip with a reason; .ci/run installs
# what they need and sets AUTOMIX_REQUIRE_SUITES, so that in CI a skip of one of them is a failure.
OPTIONAL_SUITES = {
    "browser": ("test_browser.py::",),
    "widgets7": ("test_widgets_compat.py::",),
    "fashion": ("test_data.py::test_fashion_mnist",),
    "cifar_jpg": ("test_data.py::test_cifar10_jpeg",),
    "floor": ("test_torch_floor.py::",),
}
_SUITE_OUTCOMES: dict[str, list[str]] = {}


def _suite_of(nodeid: str) -> str | None:
    return next((s for s, keys in OPTIONAL_SUITES.items() if any(k in nodeid for k in keys)), None)


def _required() -> set[str]:
    import os

    return {s.strip() for s in os.environ.get("AUTOMIX_REQUIRE_SUITES", "").split(",") if s.strip()}


import pytest  # noqa: E402


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    suite = _suite_of(item.nodeid)
    if suite is None or report.when not in ("setup", "call"):
        return
    if report.skipped and suite in _required():
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"required suite {suite!r} skipped in CI (AUTOMIX_REQUIRE_SUITES): {reason}"
    if report.when == "call" or report.skipped or report.failed:
        _SUITE_OUTCOMES.setdefault(suite, []).append(report.outcome)


def pytest_terminal_summary(terminalreporter):
    lines = []
    for suite in OPTIONAL_SUITES:
        got = _SUITE_OUTCOMES.get(suite, [])
        counts = ", ".join(f"{got.count(o)} {o}" for o in ("passed", "failed", "skipped") if got.count(o))
        lines.append(f"  {suite:10s} {counts or 'not collected'}"
                     f"{'  (required)' if suite in _required() else ''}")
    terminalreporter.write_sep("-", "optional suites")
    for line in lines:
        terminalreporter.write_line(line)
