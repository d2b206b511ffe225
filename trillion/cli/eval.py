"""`trillion eval`: held-out loss and perplexity of a trained model (`--task heldout`, the default), or
passkey retrieval at long context (`--task passkey --context 8K,64K --depths 0,0.5,1`).

The held-out task is a thin wrapper over `trillion.train.evaluate_folder`. With no --model it evaluates
the demo model shipped in the package; with no other option, on the split the model's training.json
names, so it reproduces the perplexity documented in docs/training.md.

The passkey task (`trillion.train.passkey`) hides a 5-digit key at each depth of filler text of each
context length, asks the model to repeat it through the engine (greedy), and prints the accuracy
table; --out DIR writes DIR/passkey.json and the heatmap DIR/passkey.png. docs/long-context.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import UserError
from .common import DTYPES, add_threads_arg, context_tokens, positive_int, resolve_model, set_threads

DEFAULT_DEPTHS = "0,0.25,0.5,0.75,1"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="held-out loss and perplexity, or passkey retrieval at long context",
        description="--task heldout (default): rebuild the held-out split a model was trained with (its "
        "training.json: data, held-out fraction, sequence length) and report the mean next-token "
        "cross-entropy and its perplexity over every held-out token. Deterministic. --task passkey: "
        "hide a 5-digit key at each --depths of filler text (the --data corpus) of each --context length, "
        "ask the model for it (greedy, through the engine) and report the accuracy by length and depth.",
    )
    p.add_argument("--task", choices=["heldout", "passkey"], default="heldout", help="what to measure")
    p.add_argument("--model", default="demo", help="a model folder, or a shipped model")
    p.add_argument(
        "--data", nargs="+", default=None, metavar="PATH_OR_stdlib",
        help="override the data sources (passkey: the filler text; default the model's training data, else stdlib)",
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
    g = p.add_argument_group("passkey")
    g.add_argument("--context", type=context_list, default=None, metavar="N[,N...]",
                   help="prompt lengths in tokens: 4096,64K,1M (default: 1K,4K and the model's position limit)")
    g.add_argument("--depths", type=depth_list, default=depth_list(DEFAULT_DEPTHS), metavar="D[,D...]",
                   help=f"where the key sits in the filler, 0 (start) .. 1 (end) (default: {DEFAULT_DEPTHS})")
    g.add_argument("--trials", type=positive_int, default=3, help="keys per (context, depth) cell")
    g.add_argument("--seed", type=int, default=0, help="seeds the keys")
    g.add_argument("--out", type=Path, default=None, help="folder for passkey.json and the heatmap passkey.png")
    g.add_argument("--max-seqs", type=positive_int, default=4, help="prompts run together in the engine")
    g.add_argument("--prefill-chunk", type=positive_int, default=2048, help="prompt tokens per prefill step")
    g.add_argument("--kv-dtype", choices=["auto", "bf16", "float32", "fp8"], default="auto",
                   help="attention-state storage (fp8: the release's FP8 KV and FP4 indexer keys)")
    g.add_argument("--allow-long-context", action="store_true",
                   help="allow --context past the model's position limit (a warning: it was not trained that long)")
    p.set_defaults(func=run)


def context_list(text: str) -> list[int]:
    """An argparse type: comma-separated token counts (4096, 64K, 1M)."""
    return [context_tokens(t.strip()) for t in text.split(",") if t.strip()]


def depth_list(text: str) -> list[float]:
    """An argparse type: comma-separated fractions in [0, 1]."""
    out = []
    for t in text.split(","):
        try:
            d = float(t)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected numbers between 0 and 1, got {t!r}") from None
        if not 0.0 <= d <= 1.0:
            raise argparse.ArgumentTypeError(f"a depth is a fraction between 0 and 1, got {t}")
        out.append(d)
    return out


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    model = resolve_model(args.model)
    if args.task == "passkey":
        return run_passkey(args, model)
    from ..train import evaluate_folder

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


def run_passkey(args: argparse.Namespace, model: str) -> int:
    import time

    import torch

    from ..engine import LLM
    from ..train import passkey
    from ..train.evaluate import training_info

    if not (Path(model) / "tokenizer.json").is_file():
        raise UserError(f"{model}: --task passkey needs a model folder with a tokenizer.json (the key and "
                        "the filler are text)")
    data = args.data or training_info(Path(model)).get("data") or ["stdlib"]
    from ..config import ModelConfig

    limit = ModelConfig.from_file(Path(model) / "config.json").max_seq_len
    contexts = args.context or sorted({1024, 4096, limit})
    longest = max(contexts) + passkey.NEW_TOKENS
    llm = LLM(model, dtype=getattr(torch, DTYPES[args.dtype]), max_seqs=args.max_seqs,
              max_model_len=longest if longest > limit else None, allow_long_context=args.allow_long_context,
              prefill_chunk=args.prefill_chunk, kv_dtype=args.kv_dtype)
    tok = llm.tokenizer.tok
    haystack = passkey.Haystack(lambda s: tok.encode(s, add_special_tokens=False).ids, data,
                                bos_id=llm.model.cfg.bos_token_id)
    started = time.perf_counter()
    result = passkey.run_grid(passkey.engine_answers(llm), haystack, contexts, args.depths, args.trials, args.seed,
                              progress=None if args.json else lambda s: print(s, file=sys.stderr, flush=True))
    result.update(model=str(model), filler=list(data), kv_dtype=args.kv_dtype, seconds=time.perf_counter() - started)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "passkey.json").write_text(json.dumps(result, indent=2) + "\n")
        passkey.heatmap(result, args.out / "passkey.png", title=f"passkey retrieval: {Path(model).name}, "
                        f"{args.trials} keys a cell, accuracy {result['accuracy']:.0%}")
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{model}: passkey accuracy {result['accuracy']:.0%} ({args.trials} keys a cell, filler "
              f"{', '.join(data)}, {result['seconds']:.0f} s)")
        print(passkey.table(result))
        if args.out:
            print(f"wrote {args.out / 'passkey.json'} and {args.out / 'passkey.png'}")
    return 0
