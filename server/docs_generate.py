"""Writes the generated documentation pages: ``python -m server.docs_generate`` (``make docs-generate``).

Three pages are read off the code rather than written by hand, so they cannot drift from it: the job
config reference (``deit_core.config_schema``), the settings (``server.settings_doc``) and the REST
reference (``server.api.openapi_doc``). Engineers add settings and OpenAPI fields in parallel; after a
merge one command brings every page up to date, and ``tests/test_docs.py`` names that command when a
committed page is stale.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from deit_core import config_schema
from deit_core.files import write_temp_beside

from . import settings_doc
from .api import openapi_doc

ROOT = Path(__file__).resolve().parents[1]
COMMAND = "make docs-generate"
# page (relative to the repository root) -> the function that returns its text
PAGES: dict[str, Callable[[], str]] = {
    "docs/config.md": config_schema.markdown,
    "docs/configuration.md": settings_doc.markdown,
    "docs/rest.md": openapi_doc.markdown,
}


def stale(root: Path = ROOT) -> list[str]:
    """The pages whose committed text is not their generator's output."""
    return [page for page, make in PAGES.items()
            if not (root / page).exists() or (root / page).read_text() != make()]


def write(root: Path = ROOT) -> list[str]:
    """Rewrite every page (each atomically: a temp file beside it, renamed into place); returns the changed."""
    changed = []
    for page, make in PAGES.items():
        target, text = root / page, make()
        if target.exists() and target.read_text() == text:
            continue
        write_temp_beside(target, text.encode(), page).replace(target)
        changed.append(page)
    return changed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m server.docs_generate", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 naming the stale pages")
    args = p.parse_args(argv)
    if args.check:
        pages = stale()
        for page in pages:
            print(f"{page} is stale: run `{COMMAND}`", file=sys.stderr)
        return 1 if pages else 0
    for page in write():
        print(f"wrote {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
