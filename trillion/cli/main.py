"""`trillion <command>`: one CLI whose commands are thin wrappers over documented functions.

Each command lives in its own module under `trillion.cli` and exposes `register(subparsers)`,
which adds its parser and sets `func(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Command modules, in the order `trillion --help` lists them.
COMMANDS = ("generate", "chat", "serve", "params", "inspect", "convert", "export", "quantize", "kv", "train", "eval")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trillion",
        description="DeepSeek-V4-class models in plain PyTorch: inspect, convert, count, run.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"trillion {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"trillion.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError, KeyError) as e:
        # Errors meant for people: print the message, not a traceback.
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"trillion {args.command}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
