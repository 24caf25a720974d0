"""The ``dendnorm`` command: ``data``, ``reproduce`` and ``book`` subcommands.

Each subcommand lives in the module that does the work; that module exposes
``add_cli(subparsers)`` which registers its parser and sets ``func``.
Heavy imports (jax, papermill, sphinx) stay inside those functions so that
``dendnorm data check`` starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

_SUBCOMMAND_MODULES = (
    "dendnorm_flax.data",
    "dendnorm_flax.reproduce",
    "dendnorm_flax.bookbuild",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dendnorm",
        description="Dendritic normalisation in sparse networks (Bird & Cuntz): data, reproduction, book.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _SUBCOMMAND_MODULES:
        importlib.import_module(name).add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
