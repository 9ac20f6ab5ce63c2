"""Service subcommands of `distillery` (db, up, serve, worker, token)."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Service commands are added here by the service package."""
