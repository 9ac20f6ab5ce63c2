"""The layering rules, checked on the source: data flows REST -> database -> queue -> worker ->
files -> database -> API, so ``deit_core`` (the engine) imports nothing of the service, and the
API (``server``) never imports the worker: it sends tasks by name."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

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


def test_readme_module_tables_cover_every_module():
    """Each module of deit_core, server and worker has its line in the README's module tables."""
    readme = (ROOT / "README.md").read_text()
    missing = []
    for package in ("deit_core", "server", "worker"):
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
