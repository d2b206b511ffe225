"""`trillion <command>`: one CLI whose commands are thin wrappers over documented functions.

Each command lives in its own module under `trillion.cli` and exposes `register(subparsers)`,
which adds its parser and sets `func(args) -> int`.

Exit status: 0 done; 1 a one-line error about the input (a `trillion.errors.UserError`, or a path
that is missing or unreadable); 2 a usage error; 130 Ctrl-C. Anything else is a bug and prints its
traceback. Output cut short by a closed pipe (`| head`) ends quietly, as with other Unix tools.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ..errors import UserError

# Command modules, in the order `trillion --help` lists them.
COMMANDS = ("generate", "chat", "serve", "params", "inspect", "convert", "export", "quantize", "kv", "plan", "train", "eval")

# Errors about paths people give: their own message names the path.
PATH_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)

SIGPIPE_STATUS = 141  # 128 + SIGPIPE: what a shell reports for a Unix tool whose reader went away


BUSY_LOAD = 0.5  # a 1-minute load average at or above this: another process is using the CPU


def set_thread_defaults() -> None:
    """OpenMP's worker threads spin on their cores between parallel regions by default. On an idle
    machine that is the fast choice (a decode step has ~150 short regions: sleeping threads take
    longer to wake, and PASSIVE halved bench-94m's batch-1 decode on an idle 2-core Xeon, 38 -> 19
    tok/s). With another busy process they spin against it: a 64-token generate took 23 s instead of
    3.7 s (docs/engine.md, "Threads"). So when something else is running when the command starts (the
    load average, which counts processes running or waiting for a core, is at or above BUSY_LOAD),
    OMP_WAIT_POLICY=PASSIVE lets idle threads sleep; otherwise OpenMP's default stays. OpenMP reads
    the variable once, when torch loads it, so this runs before any torch import; a value the user set
    wins."""
    if "OMP_WAIT_POLICY" in os.environ:
        return
    try:
        busy = os.getloadavg()[0] >= BUSY_LOAD
    except OSError:  # no load average on this platform: the safe choice on a shared machine
        busy = True
    if busy:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


class CommandParser(argparse.ArgumentParser):
    """Every command's parser lists its defaults in --help."""

    def __init__(self, *args, **kwargs):
        from .common import HelpFormatter

        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="trillion",
        description="DeepSeek-V4-class models in plain PyTorch: inspect, convert, count, run.",
    )
    parser.add_argument("--version", action="version", version=f"trillion {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    for name in COMMANDS:
        importlib.import_module(f"trillion.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    set_thread_defaults()
    command = "trillion"
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        command = f"trillion {args.command}"
        return int(args.func(args) or 0)
    except (UserError, *PATH_ERRORS) as e:
        _error(command, "error: " + (str(e) if isinstance(e, UserError) or not e.filename else _path_message(e)))
        return 1
    except KeyboardInterrupt:
        _error(command, "interrupted")
        return 130
    except BrokenPipeError:
        # The reader is gone: send what is still buffered nowhere, so exiting prints no second error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return SIGPIPE_STATUS


def _path_message(e: OSError) -> str:
    """"x: No such file or directory" rather than "[Errno 2] No such file or directory: 'x'"."""
    return f"{e.filename}: {e.strerror}"


def _error(command: str, message: str) -> None:
    try:
        sys.stdout.flush()  # what the command printed comes first (the streaming commands end their line)
    except (BrokenPipeError, ValueError):  # stdout gone or closed
        pass
    print(f"{command}: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
