"""Arguments shared by the commands that run a model."""

from __future__ import annotations

import argparse
from pathlib import Path

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16"}


def add_engine_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine")
    g.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="compute dtype")
    g.add_argument("--max-seqs", type=int, default=8, help="sequences decoded together")
    g.add_argument("--max-model-len", type=int, default=None, help="prompt + new tokens limit")
    g.add_argument("--prefill-chunk", type=int, default=512, help="prompt tokens per prefill step")
    g.add_argument("--speculative", choices=["mtp"], default=None, help="self-speculative decoding with the MTP block")
    g.add_argument("--num-draft-tokens", type=int, default=1, help="draft tokens per speculative step")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the decode step and prefill stages (faster after a one-time "
                        "compilation of 1-4 minutes; cached on disk)")


def engine_kwargs(args: argparse.Namespace) -> dict:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    args.torch_dtype = getattr(torch, DTYPES[args.dtype])
    return {"max_seqs": args.max_seqs, "max_model_len": args.max_model_len, "prefill_chunk": args.prefill_chunk,
                "speculative": args.speculative, "num_draft_tokens": args.num_draft_tokens, "compile": args.compile}


def resolve_model(model: str | None) -> str:
    """A checkpoint folder or flavor; None means the demo model shipped with the package."""
    if model:
        return model
    try:
        from ..assets import demo_path
    except ImportError:
        demo_path = None
    path = demo_path() if demo_path else None
    if path is None or not Path(path).exists():
        raise FileNotFoundError("no --model given and the shipped demo model is not installed")
    return str(path)
