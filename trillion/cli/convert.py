"""`trillion convert SRC DST --to {hf,deepseek}`: rewrite a checkpoint (or a flavor's random init).

A thin wrapper over `load_model` and `save_model`. The hf layout stores `--dtype` (default: the
source's dtype from its config.json, else float32); the deepseek layout fixes each tensor's storage
(FP8 / FP4 / bf16 / fp32 / int64), so the model is read in float32 and quantised from that.
Tokenizer files are copied along. DST may be SRC; a DST that holds anything besides a checkpoint
(and what trillion writes beside one, such as training.json) is refused unless `--overwrite`, and
only a checkpoint's own files are ever replaced there (trillion.checkpoint.atomic).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from ..checkpoint import load_model, save_model
from ..checkpoint.atomic import check_destination
from ..checkpoint.dtype import as_dtype, folder_dtype
from ..checkpoint.layouts import DEEPSEEK, HF, LAYOUTS
from ..checkpoint.save import DEFAULT_MAX_SHARD_BYTES
from ..errors import UserError
from .common import resolve_model

UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert a checkpoint folder (or a flavor's random init) to the hf or deepseek layout",
        description="Load SRC (a checkpoint folder in either layout, or a flavor name for a seeded random "
        "model) and write it to DST in the chosen layout, atomically. Only a checkpoint's files are replaced "
        "in DST; a DST holding other files is refused unless --overwrite, and they are kept.",
    )
    p.add_argument("src", help="checkpoint folder or flavor name")
    p.add_argument("dst", help="output folder")
    p.add_argument(
        "--to", required=True, choices=LAYOUTS, help="hf: transformers' layout; deepseek: the release's"
    )
    p.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        help="hf only: dtype of the stored weights (norms, mHC, router, head stay float32); "
        "default: the source's",
    )
    p.add_argument(
        "--max-shard-size", default=str(DEFAULT_MAX_SHARD_BYTES), help="bytes per shard, e.g. 5GB, 500MB"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random init when SRC is a flavor")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a DST that holds other files: replace a checkpoint's files there, keep the rest",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.to == DEEPSEEK and args.dtype:
        raise UserError("--dtype applies to --to hf only; the deepseek layout fixes each tensor's storage")
    src = Path(resolve_model(args.src))  # `demo`: the shipped folder (its tokenizer is copied along)
    max_shard_bytes = parse_size(args.max_shard_size)
    check_destination(args.dst, overwrite=args.overwrite)  # before the (slow) load
    if args.to == HF:
        dtype = as_dtype(args.dtype) if args.dtype else (folder_dtype(src) or torch.float32)
    else:
        dtype = torch.float32
    model = load_model(str(src), dtype=dtype, seed=args.seed, quantize=False)
    save_model(
        model,
        args.dst,
        layout=args.to,
        dtype=dtype if args.to == HF else None,
        max_shard_bytes=max_shard_bytes,
        copy_files_from=src if src.is_dir() else None,
        overwrite=args.overwrite,
    )
    print(f"wrote {args.dst} ({args.to} layout) from {args.src}")
    return 0


def parse_size(text: str) -> int:
    """'5GB' -> 5_000_000_000, '512MiB' -> 536_870_912, '1000' -> 1000."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).upper() not in UNITS:
        raise UserError(f"--max-shard-size {text!r}: expected a size such as 5GB, 500MB or 1000000")
    return int(float(m.group(1)) * UNITS[m.group(2).upper()])
