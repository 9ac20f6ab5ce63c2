"""What does int8 mobile export cost in accuracy, and what does it buy in speed and size?

Runs the real export (``deit_core.export.export_final``, the code behind ``distillery export``) on
a ``final/`` directory and prints, for the fp32 eager model, the int8 eager model, the ``.ptl``
(Lite Interpreter) and the ``.pte`` (ExecuTorch XNNPACK): top-1/top-5 on the val folder, top-1
agreement with fp32, latency p50/p90 at batch 1 on one thread, file size and its ratio to the fp32
weights (``model.safetensors``). The parity gate is reported, not enforced (``--max-drop 100``
by default), so a collapsed int8 model still prints its table.

    python benchmarks/export_quality.py --model runs/digits-ti/final --val data/digits
    python benchmarks/export_quality.py --model runs/digits-ti/final --val data/digits --no-pte --keep-fp32 ''
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import torch

from deit_core import export, export_report, mobile


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a run's final/ directory")
    p.add_argument("--val", required=True, help="ImageFolder root holding val/, or the val folder itself")
    p.add_argument("--output", help="keep the export here (must not exist or be empty; default: a temp dir, removed afterwards)")
    p.add_argument("--no-pte", dest="pte", action="store_false", help="skip the ExecuTorch .pte")
    p.add_argument("--keep-fp32", default=None, metavar="PATTERNS",
                   help=f"Linear layers kept fp32 (default {','.join(mobile.DEFAULT_KEEP_FP32)}; '' quantizes all)")
    p.add_argument("--max-drop", type=float, default=100.0, help="parity gate threshold (default 100: report only)")
    p.add_argument("--latency-runs", type=int, default=100)
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads for the export itself (latency is always 1 thread)")
    p.add_argument("--json", action="store_true", help="also print the variants as JSON")
    return p.parse_args(argv)


def run(args: argparse.Namespace, out: Path) -> dict:
    opts = export.ExportOptions(val=args.val, max_drop=args.max_drop, force=args.output is None, pte=args.pte,
                                keep_fp32=mobile.parse_patterns(args.keep_fp32), latency_runs=args.latency_runs,
                                latency_warmup=max(1, min(20, args.latency_runs // 5)))
    try:
        return export.export_final(args.model, out, opts)
    except export.ParityGateError as e:
        return e.report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="export-quality-") as tmp:
        out = Path(args.output) if args.output else Path(tmp) / "out"
        try:
            report = run(args, out)
        except export.ExportError as e:
            print(f"error: {e}", file=sys.stderr)
            return e.exit_code
    m, q, stamp = report["model"], report["quantization"], report["runtime"]
    print(f"model: {m['architecture']} ({m['kind']}), {len(m['classes'])} classes, {m['img_size']} px; "
          f"val: {report['val']['images']} images at {report['val']['path']}")
    print(f"int8: {len(q['quantized_linear'])} Linear layers ({100 * q['quantized_param_fraction']:.1f}% of the weights), "
          f"kept fp32: {', '.join(q['kept_fp32_linear']) or 'none'}; engine {q['engine']}")
    print(f"torch {stamp['torch']}, executorch {stamp['executorch']}, .ptl bytecode v{stamp['ptl_bytecode_version']}, "
          f"{len(stamp['ptl_operators'])} operators; {stamp['platform']}")
    print(export_report.format_table(report["variants"], m["fp32_weights_bytes"], report.get("cpu"),
                                      report.get("latency")))
    gate = report["gate"]
    print(f"parity gate at --max-drop {gate['max_drop']}: {'passed' if gate['passed'] else 'FAILED'} ({gate['reason']})")
    for s in report["skipped"]:
        print(f"skipped: {s}")
    print(f"export took {report['elapsed_s']:.1f} s")
    if args.json:
        print(json.dumps(report["variants"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
