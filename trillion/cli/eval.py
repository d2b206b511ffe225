"""`trillion eval [--model PATH] [--data stdlib ...]`: held-out loss and perplexity of a trained model.

A thin wrapper over `trillion.train.evaluate_folder`. With no --model it evaluates the demo model
shipped in the package; with no other option, on the split the model's training.json names, so it
reproduces the perplexity documented in docs/training.md.
"""

from __future__ import annotations

import argparse
import json

from .common import DTYPES, add_threads_arg, positive_int, resolve_model, set_threads


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="held-out loss and perplexity of a trained model",
        description="Rebuild the held-out split a model was trained with (its training.json: data, "
        "held-out fraction, sequence length) and report the mean next-token cross-entropy and its "
        "perplexity over every held-out token. Deterministic.",
    )
    p.add_argument("--model", default="demo", help="a model folder, or a shipped model")
    p.add_argument(
        "--data", nargs="+", default=None, metavar="PATH_OR_stdlib", help="override the data sources"
    )
    p.add_argument("--heldout", type=float, default=None, help="override the held-out fraction")
    p.add_argument("--seq-len", type=int, default=None, help="override the sequence length")
    p.add_argument("--batch", type=positive_int, default=None,
                   help="sequences per forward (default: the model's training.json, else 8)")
    p.add_argument("--max-docs", type=positive_int, default=None, help="override the document limit")
    p.add_argument("--max-batches", type=positive_int, default=None, help="evaluate only this many batches")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="compute dtype")
    add_threads_arg(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..train import evaluate_folder

    set_threads(args.threads)
    model = resolve_model(args.model)
    r = evaluate_folder(
        model,
        data=args.data,
        heldout=args.heldout,
        seq_len=args.seq_len,
        batch=args.batch,
        max_docs=args.max_docs,
        max_batches=args.max_batches,
        dtype=DTYPES[args.dtype],
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
