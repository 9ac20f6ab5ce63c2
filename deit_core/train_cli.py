"""Arguments of `distillery train` / `python -m deit_core.train`, apart from the trainer so that building
the CLI parser does not import torch (every client command would pay seconds for it)."""
from __future__ import annotations

import argparse


def add_resume_arguments(p: argparse.ArgumentParser) -> None:
    """``--resume`` and ``--allow-reshard``, shared by both entry points."""
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoints/last.pt")
    p.add_argument("--allow-reshard", action="store_true",
                   help="with --resume: accept a different number of processes or train.accum_steps than the "
                        "checkpoint's (the global batch, lr and schedule then change)")


def add_cache_arguments(p: argparse.ArgumentParser) -> None:
    """Where ``distillation.teacher_cache: auto`` finds and writes teacher-output caches, and the cap."""
    p.add_argument("--teacher-cache-dir", default=None,
                   help="the teacher-output cache store (the service passes <storage>/teacher_cache); without it, "
                        "'auto' neither reads nor writes a cache")
    p.add_argument("--teacher-cache-max-bytes", type=int, default=8 << 30,
                   help="the largest cache this run may write (estimated before writing; default 8 GiB)")
