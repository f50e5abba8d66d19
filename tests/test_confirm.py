"""The confirmatory study (benchmarks/confirm.py): its settings are the pre-registered ones, its analysis computes
what the pre-registration says, and every place that quotes its result quotes the results file."""
from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import confirm  # noqa: E402

PREREG = ROOT / "benchmarks" / "preregistration.md"
RESULTS = ROOT / "benchmarks" / "results" / "confirm.json"
QUOTED_IN = [ROOT / "README.md", ROOT / "docs" / "recipes.md", ROOT / "notebooks" / "03_train_automix.ipynb"]


def _prereg_table() -> dict[str, dict]:
    """Rows of the pre-registration's settings table: {setting: {img_size, train_subset, val_subset, epochs, seeds}}."""
    rows = {}
    for line in PREREG.read_text().splitlines():
        m = re.match(r"\| `(\w+)` \([^)]*\) \| [^|]+\| (\d+) \| (\d+) \| (\d+) \| (\d+) \| [\d,]+ \| ([\d, ]+) \|", line)
        if m:
            rows[m[1]] = dict(img_size=int(m[2]), train_subset=int(m[3]), val_subset=int(m[4]), epochs=int(m[5]),
                              seeds=tuple(int(s) for s in m[6].split(",")))
    return rows


def test_settings_and_seeds_are_the_preregistered_ones():
    table = _prereg_table()
    assert set(table) == set(confirm.SETTINGS), "the script's settings differ from benchmarks/preregistration.md"
    for name, row in table.items():
        cfg = confirm.SETTINGS[name]
        assert cfg["dataset"] == "fashion-mnist"
        for key in ("img_size", "train_subset", "val_subset", "epochs"):
            assert cfg[key] == row[key], (name, key)
        assert tuple(confirm.SEEDS) == row["seeds"], name
    # the exploratory seeds are not reused for the replication
    explore = json.loads((ROOT / "benchmarks" / "results" / "small_data.json").read_text())
    used = {int(s) for s in explore["summary"]["fashion_500"]["methods"]["automix"]["per_seed"]}
    assert used.isdisjoint(confirm.SEEDS)


def test_the_alphas_are_the_preregistered_ones():
    text = PREREG.read_text()
    for method, alpha in confirm.METHOD_ALPHA.items():
        if method != "vanilla":
            assert re.search(rf"`{method}` \(α = {alpha}\)", text), method


def test_paired_ci_is_the_student_t_interval():
    d = [0.5, -0.2, 0.9, 0.3, 0.1]
    c = confirm.paired_ci(d)
    mean, sd = statistics.fmean(d), statistics.stdev(d)
    half = 2.7764451051977987 * sd / 5 ** 0.5  # t(0.975, 4) from a printed table
    assert c["mean_diff"] == pytest.approx(mean)
    assert c["ci_low"] == pytest.approx(mean - half, rel=1e-9)
    assert c["ci_high"] == pytest.approx(mean + half, rel=1e-9)
    assert c["wins"] == 4 and c["n"] == 5
    shifted = confirm.paired_ci([x + 1.0 for x in d])  # shifting every difference shifts the interval
    assert shifted["ci_low"] == pytest.approx(c["ci_low"] + 1.0)


@pytest.mark.parametrize("diffs,expected", [([0.5, 0.6, 0.4, 0.7, 0.5], "replicated"),
                                            ([0.5, -0.6, 0.4, 0.7, 0.1], "inconclusive"),
                                            ([-0.5, 0.2, -0.4, 0.1, 0.0], "not replicated"),
                                            ([0.0, 0.0, 0.1, -0.1, 0.0], "not replicated")])
def test_verdict_follows_the_preregistered_rule(diffs, expected):
    assert confirm.verdict(confirm.paired_ci(diffs), 5) == expected


def test_verdict_says_when_seeds_are_missing():
    v = confirm.verdict(confirm.paired_ci([0.5, 0.6, 0.4]), 5)
    assert v.startswith("replicated") and "incomplete: 3 of 5" in v


def _records(top1: dict[tuple[str, int], float]) -> list[dict]:
    return [{"setting": "fashion_500", "method": m, "seed": s, "top1": v} for (m, s), v in top1.items()]


def test_analyse_pairs_by_seed_not_by_position():
    recs = _records({("vanilla", 3): 80.0, ("vanilla", 4): 70.0, ("automix", 4): 71.0, ("automix", 3): 80.5})
    a = confirm.analyse(recs)["settings"]["fashion_500"]
    c = a["vs_vanilla"]["automix"]
    assert c["seeds"] == [3, 4] and c["diffs"] == [0.5, 1.0]
    assert a["verdict"] == "inconclusive (incomplete: 2 of 5 seeds)"  # t(0.975, 1) = 12.7: a wide interval


def test_plan_runs_every_primary_method_before_the_secondary_ones():
    p = confirm.plan(["fashion_500"], [3, 4], ["vanilla", "automix", "mixup", "cutmix"])
    methods = [m for _, m, _ in p]
    assert methods[:4] == ["vanilla", "automix"] * 2
    assert set(methods[4:]) == {"mixup", "cutmix"} and len(p) == 8


def test_confirm_runs_resumes_and_analyses_end_to_end(tmp_path):
    args = ["--quick", "--out", str(tmp_path), "--runs-dir", str(tmp_path / "runs"), "--settings", "fashion_500",
            "--seeds", "3", "4", "--methods", "vanilla", "automix"]
    try:
        first = confirm.main(args)
    except FileNotFoundError as e:  # pragma: no cover - machines without the Debian dataset
        pytest.skip(f"Fashion-MNIST not installed: {e}")
    log = tmp_path / "confirm_fashion_500_runs.jsonl"
    assert len(log.read_text().splitlines()) == 4
    again = confirm.main(args)  # every run is in the log: nothing is trained twice
    assert len(log.read_text().splitlines()) == 4
    assert again["analysis"] == first["analysis"]
    md = (tmp_path / "confirm.md").read_text()
    assert confirm.quote(first, "fashion_500") in md


@pytest.mark.skipif(not RESULTS.exists(), reason="the confirmatory study has not written benchmarks/results/confirm.json")
def test_results_file_is_the_analysis_of_the_committed_logs():
    result = json.loads(RESULTS.read_text())
    records = confirm.read_logs(RESULTS.parent)
    fresh = json.loads(json.dumps(confirm.analyse(records)))  # through JSON: int seeds become strings
    assert fresh == result["analysis"], "confirm.json is stale: run python benchmarks/confirm.py --summary-only"


@pytest.mark.skipif(not RESULTS.exists(), reason="the confirmatory study has not written benchmarks/results/confirm.json")
@pytest.mark.parametrize("path", QUOTED_IN, ids=lambda p: p.name)
def test_every_place_that_quotes_the_gain_quotes_the_results_file(path):
    result = json.loads(RESULTS.read_text())
    text = path.read_text()
    for setting, s in result["analysis"]["settings"].items():
        if "automix" in s["vs_vanilla"]:
            assert confirm.quote(result, setting) in text, f"{path.name} does not quote {setting} as confirm.json says"
        if confirm.secondary_quote(result, setting):
            assert confirm.secondary_quote(result, setting) in text, f"{path.name}: {setting}'s MixUp/CutMix moved"
