"""`trillion export MODEL OUT.gguf --to gguf [--type f32|f16|q8_0]`: a model for llama.cpp.

A thin wrapper over `load_model` (quantised folders are dequantised: `quantize=False`) and
`trillion.gguf.export_gguf`. The folder's tokenizer.json travels along (`--no-tokenizer`: token ids
only). A config llama.cpp's `deepseek4` cannot run is refused before anything is written.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a checkpoint folder (or a flavor's random init) to a GGUF file for llama.cpp",
        description="Load MODEL (a checkpoint folder in either layout, quantised or not, or a flavor name "
        "for a seeded random model) and write it as one GGUF file that llama.cpp's deepseek4 "
        "architecture runs. The MTP block is not exported. docs/gguf.md has the details.",
    )
    p.add_argument("model", help="checkpoint folder or flavor name")
    p.add_argument("out", help="output .gguf file")
    p.add_argument("--to", required=True, choices=("gguf",), help="output format")
    p.add_argument(
        "--type",
        default="f32",
        choices=("f32", "f16", "q8_0"),
        help="storage of the weight matrices (attention, experts, embedding, head); norms, mHC, router, "
        "compressors stay f32 (default f32)",
    )
    p.add_argument(
        "--no-tokenizer", action="store_true", help="write no tokenizer: llama.cpp runs on token ids"
    )
    p.add_argument("--name", default=None, help="general.name of the file (default: the model's)")
    p.add_argument("--overwrite", "--force", dest="overwrite", action="store_true",
                   help="replace OUT if it exists (as convert and quantize)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random init when MODEL is a flavor")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import load_model
    from ..errors import UserError
    from ..gguf import check_llamacpp_support, export_gguf, require_gguf

    try:
        require_gguf()
    except ImportError as e:  # shown as a one-line error like the others
        raise UserError(str(e)) from None
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise UserError(f"{out}: exists; choose another name or pass --overwrite to replace it")
    src = Path(args.model)
    model = load_model(args.model, device="meta", quantize=False)  # config and names only, no memory
    check_llamacpp_support(model.cfg)
    model = load_model(args.model, seed=args.seed, quantize=False)
    tokenizer = None
    if src.is_dir() and not args.no_tokenizer and (src / "tokenizer.json").is_file():
        tokenizer = src / "tokenizer.json"
    export_gguf(model, out, type=args.type, tokenizer=tokenizer, name=args.name, overwrite=args.overwrite)
    what = "tokenizer from " + str(tokenizer) if tokenizer else "no tokenizer (token ids only)"
    print(f"wrote {out} ({args.type}, {what}, {out.stat().st_size / 1e6:.1f} MB) from {args.model}")
    return 0
