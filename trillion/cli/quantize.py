"""`trillion quantize --model PATH_OR_FLAVOR --out PATH --scheme SCHEME`: quantise and save a model.

A thin wrapper over `load_model`, `quantize_model` and `save_model` (docs/quantization.md): loads the
model in float32 (a quantised checkpoint is dequantised first), computes the float logits on a fixed
prompt, quantises, computes them again, and writes the quantised checkpoint: its scheme recorded in
config.json, the float tensors it keeps in the source's dtype (`--dtype` to choose). The write is
atomic (nothing is left behind on an error); an OUT holding anything besides a checkpoint is refused
unless --overwrite, and only a checkpoint's files are replaced there. Prints the size before and
after, on disk and in memory, and the logit error: max / mean |diff|, top-1 agreement, KL.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from .common import add_threads_arg, resolve_model


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..quant import SCHEMES

    p = subparsers.add_parser(
        "quantize",
        help="quantise a checkpoint (or a flavor's random init) with a scheme and save it",
        description="Quantise MODEL with SCHEME, report the size and logit error, and write the quantised "
        "checkpoint to OUT (atomically; only a checkpoint's files are replaced there, and an OUT holding other "
        "files is refused unless --overwrite). Schemes: "
        + "; ".join(f"{n}: {s.description}" for n, s in SCHEMES.items()),
    )
    p.add_argument("--model", default="demo", help="checkpoint folder, shipped model (demo) or flavor name")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--scheme", required=True, help=f"one of {', '.join(SCHEMES)}")
    p.add_argument(
        "--act-quant",
        action="store_true",
        help="FP8 activation quantisation (UE8M0, 128 along K) before each quantised matmul, as "
        "DeepSeek's inference code",
    )
    p.add_argument("--head", default=None, help="also quantise the output head with this format (e.g. int8)")
    p.add_argument(
        "--skip", action="append", default=[], help="regex of module names to keep in float (repeatable)"
    )
    p.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        help="dtype of the stored float (not quantised) tensors; those DeepSeek keeps in float32 stay "
        "float32; default: the source's (float32 for a flavor)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random init when MODEL is a flavor")
    p.add_argument(
        "--prompt-len", type=int, default=64, help="tokens of the fixed prompt for the logit error"
    )
    add_threads_arg(p)
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into an OUT that holds other files: replace a checkpoint's files there, keep the rest",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import load_model, save_model
    from ..checkpoint.atomic import check_destination
    from ..checkpoint.dtype import as_dtype, folder_dtype
    from ..errors import UserError
    from ..quant import fixed_tokens, get_scheme, logit_error, model_nbytes, quantize_model

    if args.threads:
        torch.set_num_threads(args.threads)
    changes = {"act_quant": True} if args.act_quant else {}
    if args.head:
        changes["head"] = args.head
    scheme = get_scheme(args.scheme, **changes)  # an unknown scheme fails here, before any loading
    for pattern in args.skip:
        try:
            re.compile(pattern)
        except re.error as e:
            raise UserError(f"--skip {pattern!r}: not a regular expression ({e})") from None
    check_destination(args.out, overwrite=args.overwrite)
    model = load_model(resolve_model(args.model), dtype=torch.float32, seed=args.seed, quantize=False)
    ids = fixed_tokens(model.cfg.vocab_size, 1, args.prompt_len)
    with torch.no_grad():
        ref = model(ids)
    src = Path(resolve_model(args.model))
    disk_before = folder_bytes(src) if src.is_dir() else None
    mem_before = model_nbytes(model)
    quantize_model(model, scheme, skip=args.skip)
    with torch.no_grad():
        err = logit_error(ref, model(ids))
    out = save_model(
        model,
        args.out,
        dtype=as_dtype(args.dtype) if args.dtype else (folder_dtype(src) or torch.float32),
        copy_files_from=src if src.is_dir() else None,
        overwrite=args.overwrite,
    )
    disk_after = folder_bytes(out)

    print(f"quantized {args.model} with scheme {scheme.name} -> {out}")
    before = f"{_size(disk_before)} on disk, " if disk_before is not None else ""
    print(f"size before  {before}{_size(mem_before)} in memory (float32)")
    print(f"size after   {_size(disk_after)} on disk, {_size(model_nbytes(model))} in memory")
    print(
        f"logit error  max {err['max_abs']:.4g}, mean {err['mean_abs']:.4g}, top-1 agreement "
        f"{100 * err['top1']:.1f}%, KL {err['kl']:.3g} nats  "
        f"(fixed prompt of {args.prompt_len} tokens vs float32)"
    )
    return 0


def folder_bytes(folder: Path) -> int:
    """Bytes of the safetensors files in a checkpoint folder."""
    return sum(f.stat().st_size for f in Path(folder).glob("*.safetensors"))


def _size(n: int) -> str:
    for unit, k in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= k:
            return f"{n / k:.2f} {unit}"
    return f"{n} B"
