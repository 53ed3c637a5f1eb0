"""The layering of DESIGN.md, enforced on the import graph (read with ast, nothing imported).

* codec/ imports the standard library only (and itself);
* policy/ (the pure engines and plans) never imports Twisted, a database driver,
  subprocess, pyroute2, rtslib or psycopg;
* only store/ imports database drivers (sqlite3, psycopg);
* only __main__ touches the global reactor;
* iso_builder never imports netbootd;
* no import cycles among netbootd's modules (function-level imports count too:
  a cycle hidden in a function is still a cycle of knowledge).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("netbootd", "iso_builder")
STDLIB = sys.stdlib_module_names
DB_DRIVERS = {"sqlite3", "psycopg", "psycopg2", "apsw"}
IMPURE = {"twisted", "subprocess", "pyroute2", "rtslib", "rtslib_fb", "psycopg", "psycopg2",
          "sqlite3"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            out[_module_name(p)] = p
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, int, str]]:
    """[(imported module, line, the names imported from it)] of one module."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno, "") for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[:len(base) - node.level + (1 if is_pkg else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names = ",".join(a.name for a in node.names)
            out.append((mod, node.lineno, names))
            # `from . import x` / `from pkg import submodule`: the submodule too
            for a in node.names:
                if f"{mod}.{a.name}" in MODULES:
                    out.append((f"{mod}.{a.name}", node.lineno, ""))
    return out


IMPORTS = {n: _imports(n, p) for n, p in MODULES.items()}


def _top(mod: str) -> str:
    return mod.split(".")[0]


def _violations(pred) -> list[str]:
    return [f"{MODULES[n].relative_to(ROOT)}:{line} imports {mod}"
            for n, imps in IMPORTS.items() for mod, line, _ in imps if pred(n, mod)]


def test_the_graph_is_read():
    """The checks below look at real modules (a wrong ROOT would pass them all)."""
    assert "netbootd.codec.dhcp" in MODULES and "netbootd.policy.dhcp_engine" in MODULES
    assert any(m == "netbootd.codec.dhcp" for m, _, _ in IMPORTS["netbootd.policy.dhcp_engine"])


def test_codec_imports_only_the_standard_library():
    assert _violations(lambda n, m: n.startswith("netbootd.codec")
                       and _top(m) not in STDLIB and not m.startswith("netbootd.codec")) == []


def test_policy_never_imports_io():
    assert _violations(lambda n, m: n.startswith("netbootd.policy") and _top(m) in IMPURE) == []


def test_only_the_store_imports_database_drivers():
    assert _violations(lambda n, m: _top(m) in DB_DRIVERS
                       and not n.startswith("netbootd.store")) == []


def test_only_main_touches_the_global_reactor():
    bad = [f"{MODULES[n].relative_to(ROOT)}:{line}"
           for n, imps in IMPORTS.items() for mod, line, names in imps
           if n != "netbootd.__main__" and (
               (mod == "twisted.internet" and "reactor" in names.split(","))
               or mod == "twisted.internet.reactor")]
    assert bad == []


def test_iso_builder_never_imports_netbootd():
    assert _violations(lambda n, m: n.startswith("iso_builder") and _top(m) == "netbootd") == []


def _cycles() -> list[list[str]]:
    graph = {n: sorted({m for m, _, _ in imps if m in MODULES and m != n})
             for n, imps in IMPORTS.items()}
    # A package's __init__ importing its own submodules is how packages work.
    for n in graph:
        graph[n] = [m for m in graph[n] if not (m.startswith(n + ".") and MODULES[n].name
                                                == "__init__.py")]
    index, low, stack, on, sccs = {}, {}, [], set(), []

    def strong(v):               # Tarjan; the graph is small, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))
    for v in graph:
        if v not in index:
            strong(v)
    return sccs


def test_no_import_cycles():
    assert _cycles() == []


@pytest.mark.parametrize("src,expect", [
    ("import sqlite3\n", ["sqlite3"]),
    ("from twisted.internet import reactor\n", ["twisted.internet"]),
])
def test_the_reader_sees_imports_inside_functions_too(tmp_path, src, expect):
    p = tmp_path / "m.py"
    p.write_text("def f():\n    " + src)
    assert [m for m, _, _ in _imports("x.m", p)] == expect
