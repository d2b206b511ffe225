"""`trillion inspect PATH [--json]`: what a checkpoint folder holds (see `trillion.checkpoint.inspect`)."""

from __future__ import annotations

import argparse
import json

from ..checkpoint import format_inspection, inspect_checkpoint
from .common import resolve_model


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="summarise a checkpoint folder: layout, config, shards, dtypes, quantization, problems",
        description="Read a checkpoint's config.json and file headers (never its weights) and report its "
        "layout, config, shards, tensor dtypes, quantization, parameter count, and any tensor the config "
        "implies but the files lack (or the reverse). Exit status 1 when it would not load.",
    )
    p.add_argument("path", help="checkpoint folder (config.json + *.safetensors), or a shipped model (demo)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    info = inspect_checkpoint(resolve_model(args.path))
    print(json.dumps(info, indent=2) if args.json else format_inspection(info))
    return 0 if info["ok"] else 1
