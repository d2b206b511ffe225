"""`trillion generate`: generate from a model, streaming to the terminal (or `--json`).

The prompt comes from -p/--prompt, --prompt-ids, --prompt-file (`-` for stdin), or, when none is
given and stdin is a pipe or a file, from stdin. With -n > 1 each sample prints as its own block:
sample 0 streams as it comes, each later sample follows (its text so far, then live) once the
samples before it are done.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import UserError
from .common import (
    add_engine_args,
    check_text,
    distributed,
    engine_kwargs,
    non_negative_int,
    positive_int,
    read_text,
    resolve_model,
    tokenizer_of,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate text or token ids from a model",
                       description="Generate from a checkpoint folder, the shipped demo model (`demo`, the "
                                   "default) or a flavor (random weights, e.g. `tiny` or `demo-random`).")
    p.add_argument("--model", default="demo",
                   help="checkpoint folder, shipped model (demo) or flavor name")
    src = p.add_mutually_exclusive_group()
    src.add_argument("-p", "--prompt", help="prompt text (needs the model's tokenizer.json)")
    src.add_argument("--prompt-ids", help="prompt as comma-separated token ids, e.g. 1,2,3")
    src.add_argument("--prompt-file", metavar="PATH", help="read the prompt text from a file; - reads stdin")
    p.add_argument("--max-new-tokens", "--max-tokens", dest="max_new_tokens", type=non_negative_int, default=64,
                   help="tokens to generate at most (--max-tokens: vLLM's name); 0 generates none")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling: keep the smallest set reaching p")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = off)")
    p.add_argument("--min-p", type=float, default=0.0, help="drop tokens below min-p x the best one's probability")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="1 = off")
    p.add_argument("--seed", type=int, default=None, help="seed of the sampling (default: random)")
    p.add_argument("-n", type=positive_int, default=1,
                   help="samples per prompt; with n > 1 each prints as its own block: sample 0 streams, "
                        "each later one follows once the ones before it are done")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--ignore-eos", action="store_true", help="keep going past the end-of-text token")
    p.add_argument("--json", action="store_true", help="print the outputs as JSON instead of streaming")
    add_engine_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..engine import LLM, SamplingParams

    text = prompt_text(args)  # before loading: a bad prompt fails fast
    params = SamplingParams(
        n=args.n, max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
        top_k=args.top_k, min_p=args.min_p, repetition_penalty=args.repetition_penalty, seed=args.seed,
        stop=args.stop, ignore_eos=args.ignore_eos,
    )
    kwargs = engine_kwargs(args)
    model = resolve_model(args.model)
    if distributed(args):  # one of several processes: rank 0 runs what follows, the others follow it
        from ..parallel.launch import running, start

        engine = start(model, tp=args.tp, dp=args.dp, dtype=args.torch_dtype, **kwargs)
        with running(engine) as leader:
            if leader:
                return generate(args, LLM(engine=engine, tokenizer=tokenizer_of(model)), text, params)
        return 0
    return generate(args, LLM(model, dtype=args.torch_dtype, **kwargs), text, params)


def generate(args: argparse.Namespace, llm, text: str | None, params) -> int:
    if args.prompt_ids is not None:
        prompt = prompt_ids(args.prompt_ids)
    elif text is not None:
        prompt = text
    elif llm.tokenizer is not None:
        prompt = text = "def "
    else:
        prompt = [llm.model.cfg.bos_token_id]
    ids = llm.encode(prompt)  # fails early (no tokenizer, bad ids) before anything is printed
    if args.json:
        out = llm.generate([ids], params)[0]
        print(json.dumps({
            "prompt_token_ids": out.prompt_token_ids,
            "outputs": [
                {"index": c.index, "token_ids": c.token_ids, "text": c.text, "finish_reason": c.finish_reason}
                for c in out.outputs
            ],
            "stats": out.stats,
        }, indent=2))
        return 0
    head = text if text is not None and llm.tokenizer is not None else ""
    stream_samples(llm, ids, params, head, sys.stdout)
    return 0


def prompt_text(args: argparse.Namespace) -> str | None:
    """The prompt text from --prompt, --prompt-file or piped stdin; None when there is none."""
    if args.prompt is not None:
        return check_text(args.prompt, "--prompt")
    if args.prompt_file is not None:
        return read_text(args.prompt_file)
    if args.prompt_ids is None and sys.stdin is not None and not sys.stdin.isatty():
        return read_text("-") or None  # an empty pipe (e.g. < /dev/null): the default prompt
    return None


def prompt_ids(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--prompt-ids must be comma-separated integers, got {text!r}") from None


def stream_samples(llm, ids: list[int], params, head: str, out) -> None:
    """Print the n samples of one prompt one after another, each streamed once it is its turn.

    Sample i prints (its header, `head`, the text it already has, then live) when samples 0..i-1 are
    done; tokens of later samples wait in their buffer. Without a tokenizer, token ids are printed.
    """
    n = params.n
    waiting: list[list[str]] = [[] for _ in range(n)]
    done = [False] * n
    live = 0

    def begin(i: int) -> None:
        if n > 1:
            out.write(("\n" if i else "") + f"[sample {i}]\n")
        out.write(head + "".join(waiting[i]))
        out.flush()

    begin(0)
    try:
        for chunk in llm.stream(ids, params):
            piece = chunk.text if llm.tokenizer is not None else f" {chunk.token_id}"
            if chunk.index == live:
                out.write(piece)
                out.flush()
            else:
                waiting[chunk.index].append(piece)
            done[chunk.index] = done[chunk.index] or chunk.finish_reason is not None
            while live < n - 1 and done[live]:
                live += 1
                begin(live)
        while live < n - 1:  # samples that ended without a last token event
            live += 1
            begin(live)
    finally:
        out.write("\n")  # end the streamed line, also when an error or Ctrl-C cuts it short
        out.flush()
