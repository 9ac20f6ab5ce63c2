"""REST client subcommands of `distillery` (submit, jobs, watch, cancel, download)."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Client commands are added here."""
