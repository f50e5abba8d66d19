"""The house (docs/architecture.md): which folder may import which, and the size limits, read from the code.

Layers, lowest first: the leaf helpers (``_names``, ``_omp``, ``_version``) < ``core`` (the algorithm) < ``fast``
(speed machinery, beside the core) < ``trainer`` < ``views``; ``interop`` reads and writes checkpoints on top of
the core. Top-level modules (``train``, ``__main__``, ``transforms``, the package itself) wire them together.
"""
import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "automix_lite"
LEAF = {"_names", "_omp", "_version"}
ALLOWED = {  # folder -> the folders its modules may import (besides the leaf helpers)
    "core": {"core"},
    "fast": {"core", "fast"},
    "trainer": {"core", "fast", "trainer"},
    "views": {"core", "trainer", "views"},
    "interop": {"core", "interop"},
}
LIMITS = {"module": 400, "function": 60, "class": 200}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _exists(module: str) -> bool:
    path = PKG.parent / module.replace(".", "/")
    return path.with_suffix(".py").exists() or path.is_dir()


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:`` (annotations only, never imported at run time)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            continue
        yield node
        yield from _runtime_nodes(node)


def _imports(path: Path) -> set[str]:
    """Every automix_lite module ``path`` imports at run time, at module level or inside a function."""
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            submodules = {f"{mod}.{a.name}" for a in node.names if _exists(f"{mod}.{a.name}")}
            found.update(submodules if submodules or node.module is None else {mod})  # from pkg import module
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.startswith("automix_lite")}


def _folder(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "package"
    return parts[1] if parts[1] in ALLOWED else ("leaf" if parts[1] in LEAF else "top")


def _library_files() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_folder_imports_only_what_its_layer_allows():
    bad = []
    for path in _library_files():
        src = _folder(_module_name(path))
        if src not in ALLOWED:
            continue
        for target in _imports(path):
            dst = _folder(target)
            if dst != "leaf" and dst not in ALLOWED[src]:
                bad.append(f"{_module_name(path)} imports {target} ({src} -> {dst})")
    assert not bad, "imports against the layering of docs/architecture.md:\n" + "\n".join(bad)


def test_the_layer_check_sees_imports_inside_functions(tmp_path):
    """The rule above would be empty if _imports missed lazy imports (the kind that once ran back up)."""
    fake = PKG / "core" / "_probe_layout.py"
    fake.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..views import live\n"
                    "def f():\n    from ..trainer import loop\n    from ..views.viz import plot_curves\n")
    try:
        assert _imports(fake) == {"automix_lite.trainer.loop", "automix_lite.views.viz"}
    finally:
        fake.unlink()


def test_no_import_cycle_between_modules():
    graph = {_module_name(p): _imports(p) for p in _library_files()}
    graph = {m: {t for t in deps if t in graph and t != m} for m, deps in graph.items()}
    package_level = {m for m in graph if (PKG.parent / m.replace(".", "/")).is_dir()}  # __init__s re-export
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> list[str] | None:
        state[m] = 1
        for t in sorted(graph[m]):
            if t in package_level:
                continue
            if state.get(t) == 1:
                return stack + [m, t]
            if t not in state and (cycle := visit(t, stack + [m])):
                return cycle
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m, [])):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def _too_long(path: Path, source: str, module_limit: bool) -> list[str]:
    out = []
    if module_limit and source.count("\n") > LIMITS["module"]:
        out.append(f"{path}: module of {source.count(chr(10))} lines")
    for node in ast.walk(ast.parse(source)):
        kind = "class" if isinstance(node, ast.ClassDef) else "function" if isinstance(
            node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None
        if kind and node.end_lineno - node.lineno + 1 > LIMITS[kind]:
            out.append(f"{path}: {kind} {node.name} of {node.end_lineno - node.lineno + 1} lines")
    return out


def test_size_limits_of_library_benchmarks_tests_and_notebooks():
    bad = []
    for folder in ("automix_lite", "benchmarks", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            bad += _too_long(path.relative_to(ROOT), path.read_text(encoding="utf-8"), folder != "tests")
    for nb in sorted(ROOT.glob("**/*.ipynb")):
        if ".ipynb_checkpoints" in nb.parts:
            continue
        for i, cell in enumerate(json.loads(nb.read_text(encoding="utf-8"))["cells"]):
            if cell["cell_type"] == "code":
                code = "\n".join(line for line in "".join(cell["source"]).split("\n") if not line.startswith(("%", "!")))
                bad += _too_long(Path(f"{nb.relative_to(ROOT)}[cell {i}]"), code, False)
    assert not bad, f"over the limits {LIMITS}:\n" + "\n".join(bad)


def test_the_size_check_counts_what_it_says():
    long_fn = "def f():\n" + "    x = 1\n" * 61
    assert _too_long(Path("x.py"), long_fn, True) == ["x.py: function f of 62 lines"]
    assert _too_long(Path("x.py"), "x = 1\n" * 401, True) == ["x.py: module of 401 lines"]


def test_every_subpackage_is_packaged():
    """A wheel must hold core/, fast/, trainer/, views/, interop/ (an explicit packages list once held the top only)."""
    import setuptools

    text = (ROOT / "pyproject.toml").read_text()
    assert 'include = ["automix_lite*"]' in text and "\npackages = [" not in text
    folders = {p.parent for p in PKG.rglob("*.py") if "__pycache__" not in p.parts}
    found = set(setuptools.find_packages(str(ROOT), include=["automix_lite*"]))
    assert found == {".".join(f.relative_to(ROOT).parts) for f in folders}
