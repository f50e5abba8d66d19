"""Shared test set-up. automix_lite is imported before any test module imports torch, so the test processes run
with OpenMP's passive wait like the CLI (automix_lite/_omp.py) and tests see no 'torch imported first' warning."""
import os

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
    _write_run_record(terminalreporter)
    lines = []
    for suite in OPTIONAL_SUITES:
        got = _SUITE_OUTCOMES.get(suite, [])
        counts = ", ".join(f"{got.count(o)} {o}" for o in ("passed", "failed", "skipped") if got.count(o))
        lines.append(f"  {suite:10s} {counts or 'not collected'}"
                     f"{'  (required)' if suite in _required() else ''}")
    terminalreporter.write_sep("-", "optional suites")
    for line in lines:
        terminalreporter.write_line(line)


# ---------------------------------------------------------------- CI: the README's run and the slow run, summed
# .ci/run runs the suite twice (the README's command, ``-m "not slow"``, then ``-m slow``) with AUTOMIX_RUN_LOG set:
# each run appends one JSON line, and ``ci_summary`` checks that the two runs together ran every collected test
# and every promised suite.
_SELECTED: list[int] = [0]
# taken out of the environment so that a pytest a test starts in a subprocess does not write to it
_RUN_LOG = os.environ.pop("AUTOMIX_RUN_LOG", None)


def pytest_collection_finish(session):
    _SELECTED[0] = len(session.items)  # after -m deselected the others


def _write_run_record(terminalreporter) -> None:
    import json

    if not _RUN_LOG:
        return
    stats = terminalreporter.stats
    count = {k: len(stats.get(k, [])) for k in ("passed", "failed", "skipped", "error", "xfailed", "xpassed")}
    deselected = len(stats.get("deselected", []))
    record = {"markexpr": terminalreporter.config.option.markexpr, "collected": _SELECTED[0] + deselected,
              "selected": _SELECTED[0], **count, "suites": {s: _SUITE_OUTCOMES.get(s, []) for s in OPTIONAL_SUITES}}
    with open(_RUN_LOG, "a") as f:
        f.write(json.dumps(record) + "\n")


def ci_summary(records: list[dict], required: set[str]) -> tuple[list[str], list[str]]:
    """(lines to print, problems) for the runs of one CI job: together they must run each collected test exactly
    once, fail none, and pass every required optional suite (a promised suite that did not run is a problem)."""
    lines, problems = [], []
    for r in records:
        lines.append(f"-m {r['markexpr']!r:12s} {r['selected']:4d} of {r['collected']} collected: "
                     + ", ".join(f"{r[k]} {k}" for k in ("passed", "failed", "skipped", "error") if r[k]))
        if r["failed"] or r["error"]:
            problems.append(f"-m {r['markexpr']!r}: {r['failed']} failed, {r['error']} errors")
    collected = {r["collected"] for r in records}
    total = sum(r["selected"] for r in records)
    if not records or len(collected) != 1 or total != next(iter(collected)):
        problems.append(f"the runs together selected {total} tests of {sorted(collected)} collected: some test ran "
                        "twice or in neither run")
    lines.append(f"together: {total} tests ran, {sum(r['passed'] for r in records)} passed")
    for suite in OPTIONAL_SUITES:
        got = [o for r in records for o in r["suites"].get(suite, [])]
        counts = ", ".join(f"{got.count(o)} {o}" for o in ("passed", "failed", "skipped") if got.count(o))
        lines.append(f"suite {suite:10s} {counts or 'did not run'}{'  (required)' if suite in required else ''}")
        if suite in required and (not got or any(o != "passed" for o in got)):
            problems.append(f"required suite {suite!r}: {counts or 'did not run'}")
    return lines, problems


def main(argv: list[str]) -> int:
    """``python tests/conftest.py RUN_LOG``: print .ci/run's summary; exit 1 on a problem."""
    import json

    records = [json.loads(line) for line in open(argv[0]) if line.strip()]
    lines, problems = ci_summary(records, _required())
    for line in lines + [f"ERROR: {p}" for p in problems]:
        print(f"[ci] {line}")
    return 1 if problems else 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
