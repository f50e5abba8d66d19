"""The documentation is self-contained: nothing in the repository points outside it, and every link resolves.

* No tracked file may cite a document that only exists outside the repository (a sibling ``shared/`` folder,
  the private design notes, absolute paths of a development machine, "spec §x" section numbers). The one
  exception: tests and benchmarks may *read data* from ``../shared/data`` (they skip when it is absent).
* Every relative Markdown link (``[text](path#anchor)``) in the tracked ``.md`` files must name an existing
  file inside the repository and, for a ``.md`` target, an existing heading anchor (GitHub's slug rule).
* Every ``docs/<page>.md#anchor`` cited in a docstring, comment or notebook must exist too.
* The presets table of ``docs/recipes.md`` states what ``PRESETS`` holds; the ``metrics.json`` table of
  ``docs/evaluation.md`` names every key a run writes; ``docs/README.md`` names every export; every module,
  file and function the docs cite exists.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SELF = "tests/test_docs.py"
# Folders whose code may read data from ../shared/data (relative to the repository), skipping when absent.
DATA_READERS = ("tests/", "benchmarks/")

OUTSIDE = [  # (pattern, what it means)
    (re.compile(r"automix_spec"), "the private specification"),
    (re.compile(r"openmixup_checkpoint\.md"), "the private checkpoint notes (use docs/checkpoints.md)"),
    (re.compile(r"(?<![\w/.-])design\.md"), "the private design notes"),
    (re.compile(r"§\s*\d"), "a section number of a document that is not in the repository"),
    (re.compile(r"\bspec(?:-faithful|\s+recommends)|\b(?:the|see|per) spec\b", re.I), "the private specification"),
    (re.compile(r"shared/(?!data\b)[\w.-]"), "a file in a folder outside the repository"),
    (re.compile(r"\.\./shared(?!/data\b)"), "a folder outside the repository"),
    (re.compile(r"/work/(?!shared/data\b)"), "an absolute path on a development machine"),
]
DATA = re.compile(r"shared/data\b")
MD_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
DOC_REF = re.compile(r"\bdocs/([\w-]+\.md)(?:#([\w-]+))?")


def tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        files = [f for f in out.splitlines() if f]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (e.g. an sdist): walk the sources
        files = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file()
                 and not any(part.startswith(".") or part in {"runs", "data", "build", "dist", "__pycache__"}
                             or part.endswith("egg-info")
                             for part in p.relative_to(ROOT).parts)]
    return sorted(f for f in files if (ROOT / f).is_file())


def _text(rel: str) -> str | None:
    try:
        if (ROOT / rel).stat().st_size > 4_000_000:
            return None  # large data files (datasets, weights) are not documentation
        return (ROOT / rel).read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None  # binary (figures, archives)


def outside_references(rel: str, text: str) -> list[str]:
    """'file:line: why: line' for every reference to something outside the repository in one file."""
    bad = []
    for no, line in enumerate(text.splitlines(), 1):
        for pattern, why in OUTSIDE:
            if pattern.search(line):
                bad.append(f"{rel}:{no}: {why}: {line.strip()[:160]}")
        if DATA.search(line) and not rel.startswith(DATA_READERS):
            bad.append(f"{rel}:{no}: only tests/ and benchmarks/ may read ../shared/data: {line.strip()[:160]}")
    return bad


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces -> hyphens."""
    text = re.sub(r"`|\*\*|__", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link keeps its text
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _strip_fences(text: str) -> str:
    """The Markdown text without fenced code blocks (a '#' line there is not a heading)."""
    return re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.S | re.M)


def _strip_code(text: str) -> str:
    """The Markdown text without fenced code blocks and inline code (links there are not links)."""
    return re.sub(r"`[^`\n]*`", "", _strip_fences(text))


def anchors(md: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in _strip_fences(md.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(rel: str, root: Path = ROOT) -> list[str]:
    """Relative links of one Markdown file that do not resolve to a file (and heading) inside ``root``."""
    src = root / rel
    bad = []
    for target in MD_LINK.findall(_strip_code(src.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        dest = (src.parent / path).resolve() if path else src.resolve()
        if not dest.is_relative_to(root.resolve()):
            bad.append(f"{rel}: {target} points outside the repository")
        elif not dest.exists():
            bad.append(f"{rel}: {target} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{rel}: {target}: no heading with anchor #{anchor} in {dest.name}")
    return bad


# ----------------------------------------------------------------------------- the checks themselves
def test_the_checkers_catch_what_they_must():
    assert outside_references("README.md", "see `shared/docs/automix_spec.md` §1.2")
    assert outside_references("automix_lite/x.py", 'DOC = ROOT.parent / "shared/docs/openmixup_checkpoint.md"')
    assert outside_references("README.md", "the layout in ../shared/notes.txt")
    assert outside_references("automix_lite/x.py", "ARCHIVE = '../shared/data/cifar10_jpg.tar.gz'")
    assert outside_references("docs/a.md", "(spec §3)") and outside_references("x.py", "(see design.md)")
    assert outside_references("x.md", "from /work/main/runs")
    assert not outside_references("benchmarks/accuracy.py", "ARCHIVE = '../shared/data/cifar10_jpg.tar.gz'")
    assert not outside_references("benchmarks/results/a.json", '"archive": "/work/shared/data/c.tar.gz"')
    assert not outside_references("automix_lite/x.py", "spec = infer_backbone(sd)  # one shared 1x1 conv")
    assert slug("The Mix Block") == "the-mix-block" and slug("`metrics.json`") == "metricsjson"
    assert slug("λ-margin fallback (OpenMixup's `lam_margin`)") == "λ-margin-fallback-openmixups-lam_margin"


def test_checkers_catch_broken_links(tmp_path):
    (tmp_path / "a.md").write_text("# Top\n## Two words\n### `code_name`\n[ok](#two-words) [ok](#code_name) "
                                   "[ok](b.md) [bad](#nope) "
                                   "[bad](c.md) [out](../x.md) `[code](z.md)`\n```\n[code](y.md)\n```\n")
    (tmp_path / "b.md").write_text("# B\n")
    bad = broken_links("a.md", tmp_path)
    assert len(bad) == 3 and "#nope" in bad[0] and "c.md" in bad[1] and "outside" in bad[2]


def test_nothing_in_the_repository_points_outside_it():
    bad = []
    for rel in tracked_files():
        text = _text(rel)
        if rel != SELF and text is not None:
            bad += outside_references(rel, text)
    assert not bad, "references to files outside the repository:\n" + "\n".join(bad)


def test_every_markdown_link_resolves():
    md = [f for f in tracked_files() if f.endswith(".md")]
    assert "README.md" in md and "docs/README.md" in md
    bad = [b for rel in md for b in broken_links(rel)]
    assert not bad, "broken links:\n" + "\n".join(bad)


def test_every_docs_reference_in_code_and_notebooks_resolves():
    bad, cited = [], 0
    for rel in tracked_files():
        text = _text(rel)
        if text is None or rel == SELF or not rel.endswith((".py", ".ipynb", ".toml", ".md")):
            continue
        for no, line in enumerate(text.splitlines(), 1):
            for page, anchor in DOC_REF.findall(line):
                cited += 1
                dest = ROOT / "docs" / page
                if not dest.is_file():
                    bad.append(f"{rel}:{no}: docs/{page} does not exist")
                elif anchor and anchor not in anchors(dest):
                    bad.append(f"{rel}:{no}: docs/{page} has no heading #{anchor}")
    assert cited > 10  # the docstrings do cite the docs
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("page", ["algorithm.md", "recipes.md", "evaluation.md", "differences.md",
                                  "checkpoints.md"])
def test_the_docs_index_and_the_readme_link_every_page(page):
    assert f"]({page}" in (ROOT / "docs/README.md").read_text(encoding="utf-8")
    assert f"](docs/{page}" in (ROOT / "README.md").read_text(encoding="utf-8")


def _presets_table() -> dict[str, dict[str, str]]:
    """Rows of the table under '## Presets' in docs/recipes.md, keyed by preset name, cells by header."""
    text = (ROOT / "docs/recipes.md").read_text(encoding="utf-8").split("## Presets", 1)[1]
    rows = [ln for ln in text.split("\n## ", 1)[0].splitlines() if ln.startswith("|")]
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in rows]
    header, body = cells[0], cells[2:]
    return {r[0].strip("`"): dict(zip(header, r)) for r in body}


def _numbers(cell: str) -> list[float]:
    return [float(v) for v in re.findall(r"(?<![\w.])\d+(?:\.\d+)?(?:e-?\d+)?", cell.replace("**", ""))]


def test_the_recipes_table_matches_the_presets():
    from automix_lite.trainer.config import PRESETS, TrainConfig

    table = _presets_table()
    assert set(table) == set(PRESETS)
    for name, row in table.items():
        cfg = TrainConfig.preset(name)
        assert _numbers(row["epochs"]) == [cfg.epochs], name
        assert _numbers(row["global batch"])[0] == cfg.batch_size, name
        assert _numbers(row["lr → min_lr (online)"]) == [cfg.lr, cfg.min_lr], name
        assert _numbers(row["wd"]) == [cfg.weight_decay], name
        assert _numbers(row["EMA m0 → m_end"]) == [cfg.ema_momentum, cfg.ema_end_momentum], name
        assert row["λ into Mix Block"].strip("*").startswith("yes" if cfg.lam_concat else "no"), name
        assert f"`{cfg.model}`" in row[next(h for h in row if h.startswith("backbone"))], name
        mb = row["Mix Block lr → min"]
        if cfg.mb_lr is not None:
            assert _numbers(mb)[:2] == [cfg.mb_lr, cfg.mb_min_lr], name
        elif cfg.mb_momentum is not None:
            assert _numbers(mb)[:3] == [cfg.lr, cfg.min_lr, cfg.mb_momentum], name
        else:
            assert "same" in mb, name


def test_the_metrics_json_table_names_every_key_train_writes(tmp_path):
    from automix_lite import TrainConfig, train

    cfg = TrainConfig.preset("quick", dataset="fake", img_size=16, num_classes=4, train_subset=16, val_subset=8,
                             model="resnet_tiny_cifar", epochs=1, batch_size=8, workers=0, amp="off",
                             out=str(tmp_path / "run"), median_last_k=1)
    metrics = json.loads((train(cfg).out / "metrics.json").read_text())
    text = (ROOT / "docs/evaluation.md").read_text(encoding="utf-8").split("## metrics.json", 1)[1]
    rows = [ln.strip("|").split("|") for ln in text.split("\n## ", 1)[0].splitlines() if ln.startswith("| `")]
    documented = {name for r in rows for name in re.findall(r"`([^`]+)`", r[0])}
    assert documented == set(metrics)
    history_cell = next(r[1] for r in rows if "`history`" in r[0])
    record = metrics["history"][0]
    for key in [*record, *record["train"], *record["val"], *record["lr"]]:
        assert f"`{key}`" in history_cell, key


def test_the_public_api_section_names_every_export():
    import automix_lite

    section = (ROOT / "docs/README.md").read_text(encoding="utf-8").split("## Public API", 1)[1]
    missing = [n for n in automix_lite.__all__ if n != "__version__" and not re.search(rf"`{n}\b", section)]
    assert not missing, f"exported but not in docs/README.md#public-api: {missing}"


def test_without_git_the_source_files_are_walked(monkeypatch):
    def no_git(*_a, **_k):
        raise OSError("git not installed")

    monkeypatch.setattr(subprocess, "run", no_git)
    files = tracked_files()
    assert {"README.md", "docs/README.md", "automix_lite/core/automix.py", SELF} <= set(files)
    assert not any(f.startswith((".git/", "runs/")) or "__pycache__" in f for f in files)


def test_code_the_docs_cite_exists():
    import importlib

    bad = []
    for page in sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]:
        text = page.read_text(encoding="utf-8")
        for path in set(re.findall(r"\b((?:automix_lite|tests|benchmarks|notebooks)/[\w/.-]+\.(?:py|ipynb|md))", text)):
            if not (ROOT / path).is_file():
                bad.append(f"{page.name}: {path} does not exist")
        for dotted in set(re.findall(r"\bautomix_lite(?:\.\w+)+", text)):
            if not _resolves(importlib, dotted):
                bad.append(f"{page.name}: {dotted} does not exist")
    assert not bad, "\n".join(bad)


def _resolves(importlib, dotted: str) -> bool:
    """``automix_lite.fast.graphed.GraphedStep``: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False
