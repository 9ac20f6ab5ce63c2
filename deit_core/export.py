"""Mobile export (int8 .ptl / .pte with verification and report)."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a run's final/ directory")
    p.add_argument("--output", required=True, help="export directory to create")
    p.add_argument("--val", help="ImageFolder root or its val/ folder, for accuracy and the parity gate")


def main(args: argparse.Namespace) -> int:
    raise SystemExit("export is not built yet")
