"""Layering: imports point down only, read from the ASTs (lazy imports inside functions count).

The engine is every module of axnb/ except view/, widgets/, checks/ and cli.py (the definition
scripts/line_budget.py counts). No engine module (workbench.py included) imports view/, widgets/
or checks/, at module level or inside a function; axnb/results/ (the saveable results) imports
nothing but itself, the vocabulary (types, errors, files) and the numeric primitives a result
holds (qmath, observers, metrics): stages produce results, never the other way; and no two
modules of the package import each other through any chain. ``import axnb`` loading no UI library
(matplotlib, ipywidgets, jinja2, netron) is checked in a subprocess by
tests/test_view.py::test_import_axnb_imports_no_ui_library.

An import is an ``import`` / ``from ... import`` statement anywhere in a module (relative ones
resolved), or ``importlib.import_module`` / ``__import__`` with a literal name. ``from axnb.x
import y`` is an import of module ``axnb.x.y`` when that is a module, else of ``axnb.x``; the
implicit import of a parent package is not an edge. Imports under ``if TYPE_CHECKING:`` never run,
so they are layering violations but not cycles.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "axnb"
UPPER = ("axnb.view", "axnb.widgets", "axnb.checks")
NOT_ENGINE = (*UPPER, "axnb.cli")
RESULTS = ("axnb.results",)
# NOTE: what results may import: the vocabulary and the numeric primitives a result holds
# (CalibStats holds observers); never a stage (calibrate, compare, plan, search, workbench...).
VOCABULARY = ("axnb.types", "axnb.errors", "axnb.files", "axnb.qmath", "axnb.observers",
              "axnb.metrics")


@dataclass(frozen=True)
class Edge:
    src: str        # importing module
    dst: str        # imported module of the package
    file: str       # path relative to the repository
    line: int
    typing_only: bool

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.src} imports {self.dst}"


def modules(package: Path = PACKAGE) -> dict[str, tuple[Path, str]]:
    """{dotted module name: (file, source)} of every .py under ``package``."""
    out = {}
    for p in sorted(package.rglob("*.py")):
        parts = list(p.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        try:
            out[".".join(parts)] = p, p.read_text(encoding="utf-8")
        except FileNotFoundError:   # NOTE: removed while we looked (an editor's rename)
            continue
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _raw_imports(tree: ast.AST):
    """(absolute-or-relative name, imported names, level, line, typing_only) of every import."""
    typing_lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for stmt in node.body:
                typing_lines.update(range(stmt.lineno, stmt.end_lineno + 1))
    for node in ast.walk(tree):
        t = node.lineno in typing_lines if hasattr(node, "lineno") else False
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, [], 0, node.lineno, t
        elif isinstance(node, ast.ImportFrom):
            yield node.module or "", [a.name for a in node.names], node.level, node.lineno, t
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name in ("import_module", "__import__"):
                yield node.args[0].value, [], 0, node.lineno, t


def _target(known: dict, name: str) -> str | None:
    """The longest prefix of ``name`` that is a module of the package."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in known:
            return ".".join(parts[:i])
    return None


def edges(package: Path = PACKAGE) -> list[Edge]:
    """Every import from one module of ``package`` to another (itself excluded)."""
    known = modules(package)
    out = []
    for mod, (path, source) in known.items():
        is_pkg = path.name == "__init__.py"
        here = mod.split(".") if is_pkg else mod.split(".")[:-1]
        rel = path.relative_to(package.parent).as_posix()
        for name, names, level, line, typing_only in _raw_imports(ast.parse(source, str(path))):
            if level:
                base = here[:len(here) - level + 1] if level > 1 else here
                name = ".".join([*base, name] if name else base)
            targets = [_target(known, f"{name}.{n}") for n in names if n != "*"] or [None]
            for t in targets:
                # NOTE: `from pkg import name` where name is not a submodule imports pkg itself.
                dst = t if t is not None and t != _target(known, name) else _target(known, name)
                if dst is not None and dst != mod:
                    out.append(Edge(mod, dst, rel, line, typing_only))
    return sorted(set(out), key=lambda e: (e.file, e.line, e.dst))


def _under(mod: str, prefixes: tuple[str, ...]) -> bool:
    return any(mod == p or mod.startswith(p + ".") for p in prefixes)


def is_engine(mod: str) -> bool:
    return mod.startswith("axnb") and not _under(mod, NOT_ENGINE)


def upward(es: list[Edge], src_ok=is_engine) -> list[Edge]:
    return [e for e in es if src_ok(e.src) and _under(e.dst, UPPER)]


def results_upward(es: list[Edge]) -> list[Edge]:
    """Imports from a results module into anything but results and the vocabulary."""
    return [e for e in es if _under(e.src, RESULTS)
            and not _under(e.dst, RESULTS + VOCABULARY)]


def cycles(es: list[Edge]) -> list[list[Edge]]:
    """Import circles, each as its edges: a shortest one through every edge on a circle."""
    graph: dict[str, dict[str, Edge]] = {}
    for e in es:
        if not e.typing_only:
            graph.setdefault(e.src, {}).setdefault(e.dst, e)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    comps: list[list[str]] = []

    def strong(v: str) -> None:          # Tarjan; the package is small, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, {}):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    out, seen = [], set()
    for comp in comps:
        inside = set(comp)
        # NOTE: one shortest cycle through every edge of the component, so each import that
        # closes a circle is listed (a component can hold several circles).
        for u in comp:
            for v, first in sorted(graph[u].items()):
                if v not in inside:
                    continue
                path = [first, *_shortest(graph, v, u, inside)]
                key = frozenset((e.src, e.dst) for e in path)
                if key not in seen:
                    seen.add(key)
                    out.append(path)
    return out


def _shortest(graph: dict[str, dict[str, Edge]], a: str, b: str, inside: set[str]) -> list[Edge]:
    """The edges of a shortest path a -> b within ``inside`` (BFS; [] when a == b)."""
    prev: dict[str, Edge] = {}
    frontier, reached = [a], {a}
    while frontier and b not in reached:
        nxt = []
        for v in frontier:
            for w, e in sorted(graph.get(v, {}).items()):
                if w in inside and w not in reached:
                    reached.add(w)
                    prev[w] = e
                    nxt.append(w)
        frontier = nxt
    path, v = [], b
    while v != a:
        path.append(prev[v])
        v = prev[v].src
    return path[::-1]


def _listing(es: list[Edge]) -> str:
    return "\n  " + "\n  ".join(map(str, es))


# ---- the rules on axnb/ -----------------------------------------------------------------------
def test_engine_imports_no_view_widgets_or_checks():
    bad = upward(edges())
    assert not bad, (f"{len(bad)} import(s) from the engine into view/ widgets/ checks/ "
                     f"(lazy ones count):{_listing(bad)}")


def test_workbench_imports_no_view_widgets_or_checks():
    bad = upward(edges(), src_ok=lambda m: m == "axnb.workbench")
    assert not bad, f"workbench.py must import no view/widgets/checks:{_listing(bad)}"


def test_results_import_no_stage():
    bad = results_upward(edges())
    assert not bad, (f"{len(bad)} import(s) from axnb/results/ into a stage (lazy ones count; "
                     f"results may import only {', '.join(VOCABULARY)}):{_listing(bad)}")


def test_no_import_cycles():
    found = cycles(edges())
    msg = "\n".join(
        f"cycle {' -> '.join([c[0].src, *(e.dst for e in c)])}:{_listing(c)}" for c in found)
    assert not found, (f"{len(found)} import cycle(s) among axnb's modules (a lazy `import axnb` "
                       f"in a submodule is one: the package imports everything):\n{msg}")


# ---- the scanner itself, on a made-up package -------------------------------------------------
def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = tmp_path / "axnb" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path / "axnb"


def test_scanner_sees_lazy_relative_dynamic_and_typing_imports(tmp_path):
    pkg = _package(tmp_path, {
        "__init__.py": "from axnb import graph\n",
        "graph.py": "import numpy\n\ndef f():\n    from axnb.view import plots\n",
        "plan.py": "from . import graph\nfrom .view.plots import draw\n",
        "sim.py": "def g():\n    import importlib\n"
                  "    return importlib.import_module('axnb.widgets')\n",
        "typ.py": "from typing import TYPE_CHECKING\n"
                  "if TYPE_CHECKING:\n    from axnb.checks import x\n",
        "cli.py": "from axnb.graph import f\n",
        "widgets/__init__.py": "",
        "results/__init__.py": "from axnb import types\n\ndef f():\n    from axnb import graph\n",
        "types.py": "",
        "view/__init__.py": "",
        "view/plots.py": "from .. import graph\nfrom axnb.view import tables\n",
        "view/tables.py": "",
        "checks/__init__.py": "",
        "checks/x.py": "",
    })
    es = edges(pkg)
    got = {(e.src, e.dst, e.line, e.typing_only) for e in es}
    assert ("axnb.graph", "axnb.view.plots", 4, False) in got                 # lazy
    assert ("axnb.plan", "axnb.graph", 1, False) in got                       # relative
    assert ("axnb.plan", "axnb.view.plots", 2, False) in got
    assert ("axnb.sim", "axnb.widgets", 3, False) in got                      # import_module
    assert ("axnb.typ", "axnb.checks.x", 3, True) in got                      # TYPE_CHECKING
    assert ("axnb.view.plots", "axnb.graph", 1, False) in got                 # from .. import
    assert ("axnb.view.plots", "axnb.view.tables", 2, False) in got
    assert ("axnb", "axnb.graph", 1, False) in got
    bad = {str(e) for e in upward(es)}
    assert bad == {"axnb/graph.py:4: axnb.graph imports axnb.view.plots",
                   "axnb/plan.py:2: axnb.plan imports axnb.view.plots",
                   "axnb/sim.py:3: axnb.sim imports axnb.widgets",
                   "axnb/typ.py:3: axnb.typ imports axnb.checks.x"}
    assert [str(e) for e in results_upward(es)] == [
        "axnb/results/__init__.py:4: axnb.results imports axnb.graph"]       # lazy, not types
    (cycle,) = cycles(es)            # graph -> view.plots -> graph; typ's import is no cycle
    assert [e.src for e in cycle] == ["axnb.graph", "axnb.view.plots"]
    assert [e.dst for e in cycle] == ["axnb.view.plots", "axnb.graph"]


def test_a_clean_package_passes(tmp_path):
    pkg = _package(tmp_path, {
        "__init__.py": "from axnb.graph import load\n",
        "graph.py": "from axnb import errors\n",
        "errors.py": "",
        "view/__init__.py": "from axnb import graph\n",
        "cli.py": "from axnb import view, graph\n",
    })
    es = edges(pkg)
    assert not upward(es) and not cycles(es)
    assert {(e.src, e.dst) for e in es} == {("axnb", "axnb.graph"), ("axnb.graph", "axnb.errors"),
                                            ("axnb.view", "axnb.graph"), ("axnb.cli", "axnb.view"),
                                            ("axnb.cli", "axnb.graph")}
