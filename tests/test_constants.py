"""Shared constants are written once: the engine's exit codes and file names in ``deit_core/layout.py``,
the launcher kinds in ``server/vocabulary.py``, the 32-bit limit ``2**31 - 1`` in ``deit_core/layout.py``.

A second spelling is a contract that can drift (the worker reading ``metrics.jsonl`` while the engine
writes another name, a Slurm check spelt ``"slurm "``). The check reads the product modules' syntax
trees, so prose (docstrings, comments, messages that mention a file) does not count.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from deit_core import layout
from server import vocabulary

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("deit_core", "server", "worker", "distillery", "benchmarks")
HOMES = {"deit_core/layout.py", "server/vocabulary.py"}
# A file name of a run or an export directory, anywhere as a whole string literal.
FILE_NAMES = {layout.METRICS_FILE, layout.TRAIN_LOG, layout.LEASE_FILE, layout.LAST_CHECKPOINT, layout.PREV_CHECKPOINT,
              layout.BEST_CHECKPOINT, layout.FINAL_CONFIG, layout.FINAL_WEIGHTS, *layout.EXPORT_FILES, layout.REJECTED_SUFFIX}
# A folder name of a run directory, as the right side of a path join (``run_dir / "final"``).
DIR_NAMES = {layout.FINAL_DIR, layout.CHECKPOINTS_DIR}
LAUNCHER_WORDS = set(vocabulary.LAUNCHERS)
# Names that hold an exit code of the engine or the exporter: assigned a number only in their home.
EXIT_CODE_NAMES = {"exit_code", "BAD_CONFIG", "EXPORT_GATE_FAILED", "EXIT_LEASE_EXPIRED", "EXIT_BAD_CONFIG",
                   "EXIT_PARITY_GATE", "EXIT_FAILED"}


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _is_int(node: ast.AST, value: int) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is int and node.value == value


def _target_names(node: ast.Assign) -> set[str]:
    names = set()
    for t in node.targets:
        for n in ast.walk(t):
            if isinstance(n, ast.Name):
                names.add(n.id)
            elif isinstance(n, ast.Attribute):
                names.add(n.attr)
    return names


def restatements(source: str) -> list[str]:
    """Each restated constant in ``source``: ``line: what``."""
    tree = ast.parse(source)
    docs = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow) and _is_int(node.left, 2) and _is_int(node.right, 31):
            found.append(f"{line}: 2**31 (deit_core.layout.MAX_INT32 / server.vocabulary.MAX_ID)")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            if node.value in FILE_NAMES:
                found.append(f"{line}: {node.value!r} (deit_core.layout)")
            elif node.value in LAUNCHER_WORDS:
                found.append(f"{line}: {node.value!r} (server.vocabulary.LOCAL / SLURM)")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant) \
                and node.right.value in DIR_NAMES:
            found.append(f"{line}: / {node.right.value!r} (deit_core.layout)")
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and type(node.value.value) is int \
                and _target_names(node) & EXIT_CODE_NAMES:
            found.append(f"{line}: {', '.join(sorted(_target_names(node)))} = {node.value.value} (deit_core.layout.EXIT_*)")
    return sorted(found, key=lambda s: int(s.split(":")[0]))


def test_the_checker_sees_each_kind_of_restatement():
    src = ('"""Writes metrics.jsonl and report.json."""\n'
           'MAX = 2**31 - 1\n'
           'p = run_dir / "metrics.jsonl"\n'
           'q = run_dir / "final" / name\n'
           'if launcher == "slurm":\n    pass\n'
           'class E:\n    exit_code = 3\n'
           'msg = f"see {run_dir}/metrics.jsonl"\n'
           'ok = run_dir / METRICS_FILE\n')
    assert [s.split(" ", 1)[0] for s in restatements(src)] == ["2:", "3:", "4:", "5:", "8:"]


@pytest.mark.parametrize("package", PACKAGES)
def test_shared_constants_are_not_restated(package):
    """Product modules import these names; only their homes spell them out."""
    spelled = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        if rel not in HOMES:
            found = restatements(path.read_text())
            if found:
                spelled[rel] = found
    assert spelled == {}, spelled
