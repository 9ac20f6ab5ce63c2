"""distillery: distill DeiT students from RegNetY teachers, export them for phones, run it as a service.

Each area registers its own subcommands so this module stays a thin dispatcher, and a command
imports only what it needs (``distillery train`` never loads Flask or Celery).
"""
from __future__ import annotations

import argparse
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    from deit_core import cli as core_cli
    from distillery import client, sweep_client, webhook_client
    from distillery.api_client import connection_arguments
    from server import cli as server_cli
    from worker import cli as worker_cli

    parser = argparse.ArgumentParser(prog="distillery", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    core_cli.register(sub)
    server_cli.register(sub)
    worker_cli.register(sub)
    common = connection_arguments()  # --url/--token, shared by the job and the sweep commands
    client.register(sub, common)
    sweep_client.register(sub, common)
    webhook_client.register(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
