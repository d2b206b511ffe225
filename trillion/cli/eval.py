"""`trillion eval [--model PATH] [--data stdlib ...]`: held-out loss and perplexity of a trained model.

A thin wrapper over `trillion.train.evaluate_folder`. With no --model it evaluates the demo model
shipped in the package; with no other option, on the split the model's training.json names, so it
reproduces the perplexity documented in docs/training.md.
"""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="held-out loss and perplexity of a trained model",
        description="Rebuild the held-out split a model was trained with (its training.json: data, "
        "held-out fraction, sequence length) and report the mean next-token cross-entropy and its "
        "perplexity over every held-out token. Deterministic.",
    )
    p.add_argument("--model", default=None, help="a model folder (default: the shipped demo model)")
    p.add_argument(
        "--data", nargs="+", default=None, metavar="PATH_OR_stdlib", help="override the data sources"
    )
    p.add_argument("--heldout", type=float, default=None, help="override the held-out fraction")
    p.add_argument("--seq-len", type=int, default=None, help="override the sequence length")
    p.add_argument("--batch", type=int, default=None, help="sequences per forward")
    p.add_argument("--max-docs", type=int, default=None, help="override the document limit")
    p.add_argument("--max-batches", type=int, default=None, help="evaluate only this many batches")
    p.add_argument(
        "--dtype", choices=("float32", "bfloat16"), default=None, help="compute dtype (default float32)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..train import evaluate_folder

    if args.threads:
        torch.set_num_threads(args.threads)
    model = args.model
    if model is None:
        from ..assets import demo_path

        model = demo_path()
    r = evaluate_folder(
        model,
        data=args.data,
        heldout=args.heldout,
        seq_len=args.seq_len,
        batch=args.batch,
        max_docs=args.max_docs,
        max_batches=args.max_batches,
        dtype=args.dtype,
    )
    if args.json:
        print(json.dumps({"model": str(model), **r}))
    else:
        print(
            f"{model}: held-out loss {r['eval_loss']:.4f} nats/token, perplexity {r['eval_ppl']:.2f} "
            f"({r['eval_tokens']} tokens, {r['documents']} documents of {', '.join(r['data'])}, "
            f"held-out fraction {r['heldout']}, seq_len {r['seq_len']})"
        )
    return 0
