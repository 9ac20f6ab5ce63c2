"""Arguments of `distillery export`, apart from the exporter so that building the CLI parser
does not import torch (every client command would pay seconds for it)."""
from __future__ import annotations

import argparse

DEFAULT_KEEP_FP32 = ("head", "head_dist", "head.fc")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a run's final/ directory")
    p.add_argument("--output", required=True, help="export directory to create")
    p.add_argument("--val", help="ImageFolder root or its val/ folder, for accuracy and the parity gate")
    p.add_argument("--max-drop", type=float, default=1.0,
                   help="parity gate: fail (exit 3, output kept at OUT.rejected/) if int8 top-1 is more than this "
                        "many points below fp32 on --val and the drop is significant (see --gate-alpha) (default 1.0)")
    p.add_argument("--gate-alpha", type=float, default=0.05,
                   help="parity gate: a drop counts only when McNemar's exact p (int8 vs fp32 on the same images) "
                        "is at most this (default 0.05; 1 judges the bare drop)")
    p.add_argument("--force", action="store_true", help="replace a non-empty OUT (only once the export succeeded)")
    p.add_argument("--no-pte", dest="pte", action="store_false", help="skip the ExecuTorch .pte (saves ~40 s)")
    p.add_argument("--no-fp32-pte", dest="fp32_pte", action="store_false",
                   help="skip the fp32 .pte timed beside the int8 one (int8 vs fp32 inside ExecuTorch is then not "
                        "reported; saves the second ExecuTorch lowering, 25-35 s on a 2-core x86)")
    p.add_argument("--keep-fp32", default=None, metavar="PATTERNS",
                   help="comma-separated fnmatch patterns of Linear layers kept fp32 "
                        f"(default {','.join(DEFAULT_KEEP_FP32)}; '' quantizes all, '*' none)")
    p.add_argument("--latency-runs", type=int, default=50,
                   help="timed runs per model after warm-up (default 50); the report gives their median and p10-p90 "
                        "spread, which needs at least 20 (fewer: the report says the spread is rough)")
    p.add_argument("--error-file", metavar="PATH",
                   help="on failure, write {\"error\": sentence, \"kind\": parity_gate|config|export, \"exit_code\": N} "
                        "as JSON to PATH (atomically); removed at the start of every export")
