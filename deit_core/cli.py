"""Engine subcommands of `distillery`: demo-data, train, export."""
from __future__ import annotations

import argparse


def _demo_data(args: argparse.Namespace) -> int:
    from .data import write_digits_imagefolder

    counts = write_digits_imagefolder(args.output, img_size=args.img_size, val_fraction=args.val_fraction, seed=args.seed)
    print(f"wrote {counts['train']} train and {counts['val']} val images in 10 classes to {args.output}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from .train import cache_options, run_from_args

    return run_from_args(args.config, args.output, resume=args.resume, allow_reshard=args.allow_reshard,
                         cache=cache_options(args))


def _export(args: argparse.Namespace) -> int:
    from .export import main as export_main

    return export_main(args)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo-data", help="write scikit-learn's digits as an ImageFolder (train/ and val/)")
    p.add_argument("--output", required=True, help="directory to create")
    p.add_argument("--img-size", type=int, default=32, help="side of the written PNGs (default 32)")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_demo_data)

    p = sub.add_parser("train", help="one training run (teacher, distill or teacher_outputs) in this process")
    p.add_argument("--config", required=True, help="job config, YAML or JSON")
    p.add_argument("--output", required=True, help="run directory")
    from .train_cli import add_cache_arguments, add_resume_arguments

    add_resume_arguments(p)
    add_cache_arguments(p)
    p.set_defaults(func=_train)

    p = sub.add_parser("export", help="int8 quantization, .ptl/.pte export, verification and report")
    from .export_cli import add_arguments

    add_arguments(p)
    p.set_defaults(func=_export)
