"""The house (docs/architecture.md): which folder may import which, and the size limits, read from the code.

Layers, lowest first: the leaf helpers (``_names``, ``_omp``, ``_version``) < ``core`` (the algorithm) < ``fast``
(speed machinery, beside the core) < ``trainer`` < ``views``; ``interop`` reads and writes checkpoints on top of
the core. Top-level modules (``train``, ``__main__``, ``transforms``, the package itself) wire them together.
"""
import ast
import json
from pathlib import Path

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


def _module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _exists(module: str, root: Path = ROOT) -> bool:
    path = root / module.replace(".", "/")
    return path.with_suffix(".py").exists() or path.is_dir()


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:`` (annotations only, never imported at run time)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            continue
        yield node
        yield from _runtime_nodes(node)


def _imports(path: Path, root: Path = ROOT) -> set[str]:
    """Every automix_lite module ``path`` imports at run time, at module level or inside a function.

    ``from P import m`` records the module ``P.m``; ``from P import name`` (a name that is not a module, e.g.
    ``from .. import TrainConfig``) records ``P`` itself: its ``__init__`` must run to hand the name over."""
    here = _module_name(path, root).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                found.add(sub if alias.name != "*" and _exists(sub, root) else mod)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.split(".")[0] == "automix_lite"}


def _folder(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "package"
    return parts[1] if parts[1] in ALLOWED else ("leaf" if parts[1] in LEAF else "top")


def _library_files(root: Path = ROOT) -> list[Path]:
    return sorted(p for p in (root / "automix_lite").rglob("*.py") if "__pycache__" not in p.parts)


def _layer_violations(root: Path = ROOT) -> list[str]:
    bad = []
    for path in _library_files(root):
        src = _folder(_module_name(path, root))
        if src not in ALLOWED:
            continue
        for target in _imports(path, root):
            dst = _folder(target)
            if dst != "leaf" and dst not in ALLOWED[src]:
                bad.append(f"{_module_name(path, root)} imports {target} ({src} -> {dst})")
    return bad


def _import_cycle(root: Path = ROOT) -> list[str] | None:
    """One cycle of the import graph, or None. Package ``__init__``s are nodes like any module (a name taken from
    a package runs its ``__init__``), so a cycle through ``automix_lite/__init__.py`` is seen."""
    graph = {_module_name(p, root): _imports(p, root) for p in _library_files(root)}
    graph = {m: {t for t in deps if t in graph and t != m} for m, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> list[str] | None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return stack + [m, t]
            if t not in state and (cycle := visit(t, stack + [m])):
                return cycle
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m, [])):
            return cycle
    return None


def test_every_folder_imports_only_what_its_layer_allows():
    bad = _layer_violations()
    assert not bad, "imports against the layering of docs/architecture.md:\n" + "\n".join(bad)


def test_no_import_cycle_between_modules():
    cycle = _import_cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _fake_package(root: Path, files: dict[str, str]) -> Path:
    """A throw-away automix_lite tree under ``root`` (the real package is never written to)."""
    for name in ("__init__.py", "core/__init__.py", "trainer/__init__.py", "views/__init__.py"):
        files.setdefault(name, "")
    for name, text in files.items():
        (root / "automix_lite" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "automix_lite" / name).write_text(text)
    return root


def test_the_layer_check_sees_imports_inside_functions(tmp_path):
    """The rule above would be empty if _imports missed lazy imports (the kind that once ran back up)."""
    root = _fake_package(tmp_path, {
        "core/_probe.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..views import live\n"
                          "def f():\n    from ..trainer import loop\n    from ..views.viz import plot_curves\n",
        "trainer/loop.py": "", "views/viz.py": "", "views/live.py": ""})
    assert _imports(root / "automix_lite/core/_probe.py", root) == {"automix_lite.trainer.loop",
                                                                     "automix_lite.views.viz"}


def test_the_layer_check_sees_names_taken_from_a_package(tmp_path):
    """``from .. import TrainConfig`` inside a core function once recorded no import at all (TrainConfig is not a
    module): the layer and the cycle checks both missed it."""
    root = _fake_package(tmp_path, {
        "__init__.py": "from .trainer.config import TrainConfig\n", "trainer/config.py": "",
        "core/masks.py": "def f():\n    from .. import TrainConfig, _omp\n    from ..trainer import config, X\n",
        "_omp.py": ""})
    assert _imports(root / "automix_lite/core/masks.py", root) == {
        "automix_lite", "automix_lite._omp", "automix_lite.trainer", "automix_lite.trainer.config"}
    assert sorted(_layer_violations(root)) == [
        "automix_lite.core.masks imports automix_lite (core -> package)",
        "automix_lite.core.masks imports automix_lite.trainer (core -> trainer)",
        "automix_lite.core.masks imports automix_lite.trainer.config (core -> trainer)"]


def test_the_cycle_check_sees_a_cycle_through_the_package_init(tmp_path):
    """A cycle through ``automix_lite/__init__.py`` was skipped (package-level targets were left out)."""
    root = _fake_package(tmp_path, {"__init__.py": "from .core.automix import AutoMix\n",
                                    "core/automix.py": "from .masks import f\nclass AutoMix: ...\n",
                                    "core/masks.py": "from .. import AutoMix\ndef f(): ...\n"})
    assert _import_cycle(root) == ["automix_lite", "automix_lite.core.automix", "automix_lite.core.masks",
                                   "automix_lite"]
    (root / "automix_lite/core/masks.py").write_text("def f(): ...\n")
    assert _import_cycle(root) is None


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


def _python_files(root: Path = ROOT) -> list[Path]:
    """Every Python file of the repository (library, tests, benchmarks, notebooks/render.py and the solutions,
    the root conftest.py, ...), not the hidden folders, caches or build outputs."""
    skip = {"__pycache__", "build", "dist"}
    return sorted(p for p in root.rglob("*.py")
                  if not any(part.startswith(".") or part in skip or part.endswith(".egg-info")
                             for part in p.relative_to(root).parts[:-1]))


def test_size_limits_of_every_python_file_and_notebook_cell():
    bad = []
    for path in _python_files():
        rel = path.relative_to(ROOT)
        bad += _too_long(rel, path.read_text(encoding="utf-8"), rel.parts[0] != "tests")  # tests: no module limit
    for nb in sorted(ROOT.glob("**/*.ipynb")):
        if ".ipynb_checkpoints" in nb.parts:
            continue
        for i, cell in enumerate(json.loads(nb.read_text(encoding="utf-8"))["cells"]):
            if cell["cell_type"] == "code":
                lines = "".join(cell["source"]).split("\n")
                code = "\n".join(line for line in lines if not line.startswith(("%", "!")))  # no magics
                bad += _too_long(Path(f"{nb.relative_to(ROOT)}[cell {i}]"), code, False)
    assert not bad, f"over the limits {LIMITS}:\n" + "\n".join(bad)


def test_the_size_check_reads_every_python_file():
    """The limits once read only automix_lite/, benchmarks/ and tests/: notebooks/render.py, the solutions and the
    root conftest.py went unchecked."""
    files = {p.relative_to(ROOT).as_posix() for p in _python_files()}
    for want in ("conftest.py", "notebooks/render.py", "automix_lite/core/automix.py", "tests/test_layout.py",
                 "benchmarks/mutants.py"):
        assert want in files, want
    assert any(f.startswith("notebooks/solutions/") for f in files)
    assert not any(f.startswith((".git/", ".ci/")) or "__pycache__" in f for f in files)


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
