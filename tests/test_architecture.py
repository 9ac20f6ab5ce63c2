"""The layering rules, checked on the source: data flows REST -> database -> queue -> worker ->
files -> database -> API, so ``deit_core`` (the engine) imports nothing of the service, the
API (``server``) never imports the worker (it sends tasks by name), and no product module imports
itself through others (an import circle), not even through an import inside a function."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PRODUCT_PACKAGES = ("deit_core", "server", "worker", "distillery")

FORBIDDEN = {  # package -> top-level packages it must not import
    "deit_core": {"server", "worker", "distillery"},
    "server": {"worker"},
}


def imported_packages(path: Path) -> set[str]:
    """Top-level package names of every import in ``path`` (relative imports excluded)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def module_name(path: Path, root: Path = ROOT) -> str:
    """``server/api/jobs.py`` -> ``server.api.jobs``; a package's ``__init__.py`` is the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def product_modules(root: Path = ROOT, packages: tuple[str, ...] = PRODUCT_PACKAGES) -> dict[str, Path]:
    """Every module of the product packages, by dotted name."""
    return {module_name(p, root): p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The deepest product module that ``name`` is or lies in (``server.vocabulary.CANCELLED`` ->
    ``server.vocabulary``); None for anything outside the product."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules:
            return ".".join(parts[:end])
    return None


def module_imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The product modules that module ``name`` imports anywhere in its source: at the top, inside
    functions, relatively (``from . import x``); ``from pkg import module`` counts as the module. The
    packages above a module (whose ``__init__`` Python runs first) are not counted: a package that
    imports its own modules would otherwise always be a circle."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {_resolve(a.name, modules) for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            found |= {_resolve(f"{source}.{a.name}", modules) for a in node.names}
    return found - {None, name}


def import_graph(root: Path = ROOT, packages: tuple[str, ...] = PRODUCT_PACKAGES) -> dict[str, set[str]]:
    modules = product_modules(root, packages)
    return {name: module_imports(name, path, modules) for name, path in modules.items()}


def _reachable(graph: dict[str, set[str]], start: str) -> dict[str, list[str]]:
    """Every module ``start`` reaches through imports, with the shortest import path to it (breadth first)."""
    paths: dict[str, list[str]] = {}
    frontier = [[start]]
    while frontier:
        nxt = []
        for path in frontier:
            for w in sorted(graph.get(path[-1], ())):
                if w not in paths:
                    paths[w] = path + [w]
                    nxt.append(paths[w])
        frontier = nxt
    return paths


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per group of modules that import each other (directly or round through others), as
    ``[a, b, ..., a]``: the shortest way round from the group's first module, so the failure reads the
    same every run."""
    reach = {v: _reachable(graph, v) for v in graph}
    cycles, seen = [], set()
    for v in sorted(graph):
        if v in reach[v] and v not in seen:  # v is on a circle, and the first of its group
            seen |= {w for w in reach[v] if v in reach[w]}
            cycles.append(reach[v][v])
    return cycles


def test_no_import_circles_among_product_modules():
    cycles = import_cycles(import_graph())
    assert cycles == [], "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_cycle_check_sees_circles_hidden_in_functions_and_relative_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    for f in ("__init__.py", "sub/__init__.py"):
        (pkg / f).write_text("")
    (pkg / "a.py").write_text("import os\n\ndef f():\n    from pkg.sub import b\n")  # hidden in a function
    (pkg / "sub" / "b.py").write_text("from .. import c\n")  # relative, ``from package import module``
    (pkg / "c.py").write_text("from pkg.a import f\n")
    (pkg / "d.py").write_text("from pkg import c\nfrom pkg.sub import b\n")  # into the circle, not part of it
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.sub.b"] == {"pkg.c"} and graph["pkg.a"] == {"pkg.sub.b"}
    assert import_cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]]
    (pkg / "c.py").write_text("from pkg import d\n")
    assert import_cycles(import_graph(tmp_path, ("pkg",))) == [["pkg.c", "pkg.d", "pkg.c"]]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_import_the_layers_after_it(package):
    offenders = {str(p.relative_to(ROOT)): sorted(imported_packages(p) & FORBIDDEN[package])
                 for p in (ROOT / package).rglob("*.py")}
    assert not {k: v for k, v in offenders.items() if v}, offenders


def test_the_checker_sees_a_forbidden_import(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("import os\nfrom worker.tasks import register\nfrom . import sibling\n")
    assert imported_packages(bad) == {"os", "worker"}


def test_job_states_are_defined_once():
    """Only server/vocabulary.py spells out the final job states; everything else imports them."""
    spellings = ('"succeeded", "failed", "cancelled"', "'succeeded', 'failed', 'cancelled'")
    spelled = [str(p.relative_to(ROOT)) for pkg in ("server", "worker", "distillery") for p in sorted((ROOT / pkg).rglob("*"))
               if p.suffix in (".py", ".js", ".html") and any(x in p.read_text() for x in spellings)]
    assert spelled == ["server/vocabulary.py"], spelled


def test_module_tables_cover_every_module():
    """Each module of deit_core, server, worker and distillery has its line in the module tables of docs/architecture.md."""
    readme = (ROOT / "docs" / "architecture.md").read_text()
    missing = []
    for package in PRODUCT_PACKAGES:
        for path in sorted((ROOT / package).glob("*.py")):
            if path.name == "__init__.py":
                continue
            named = f"`{path.name}`" if package == "deit_core" else f"{package}/{path.name}"
            if named not in readme:
                missing.append(str(path.relative_to(ROOT)))
        for sub in sorted(p for p in (ROOT / package).iterdir() if (p / "__init__.py").exists()):
            if f"`{package}/{sub.name}/`" not in readme:
                missing.append(f"{package}/{sub.name}/")
    assert missing == [], missing
