"""`trillion generate`: generate from a model, streaming to the terminal (or `--json`)."""

from __future__ import annotations

import argparse
import json
import sys

from .common import add_engine_args, engine_kwargs, resolve_model


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate text or token ids from a model",
                       description="Generate from a checkpoint folder or a flavor (random weights). "
                                   "Without --model, the demo model shipped with trillion.")
    p.add_argument("--model", help="checkpoint folder or flavor name (default: the shipped demo model)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--prompt", help="prompt text (needs the model's tokenizer.json)")
    src.add_argument("--prompt-ids", help="prompt as comma-separated token ids, e.g. 1,2,3")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--min-p", type=float, default=0.0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("-n", type=int, default=1, help="samples per prompt")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--ignore-eos", action="store_true")
    p.add_argument("--json", action="store_true", help="print the outputs as JSON instead of streaming")
    add_engine_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..engine import LLM, SamplingParams

    kwargs = engine_kwargs(args)
    llm = LLM(resolve_model(args.model), dtype=args.torch_dtype, **kwargs)
    if args.prompt_ids is not None:
        try:
            prompt = [int(t) for t in args.prompt_ids.split(",") if t.strip()]
        except ValueError:
            raise ValueError(f"--prompt-ids must be comma-separated integers, got {args.prompt_ids!r}") from None
    elif args.prompt is not None:
        prompt = args.prompt
    elif llm.tokenizer is not None:
        prompt = "def "
    else:
        prompt = [llm.model.cfg.bos_token_id]
    params = SamplingParams(
        n=args.n, max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
        top_k=args.top_k, min_p=args.min_p, repetition_penalty=args.repetition_penalty, seed=args.seed,
        stop=args.stop, ignore_eos=args.ignore_eos,
    )
    prompt = llm._ids(prompt)  # fails early (no tokenizer, bad ids) before anything is printed
    text_prompt = args.prompt if args.prompt is not None else ("def " if args.prompt_ids is None else None)
    if args.json:
        out = llm.generate([prompt], params)[0]
        print(json.dumps({
            "prompt_token_ids": out.prompt_token_ids,
            "outputs": [
                {"index": c.index, "token_ids": c.token_ids, "text": c.text, "finish_reason": c.finish_reason}
                for c in out.outputs
            ],
            "stats": out.stats,
        }, indent=2))
        return 0
    if text_prompt is not None and llm.tokenizer is not None:
        sys.stdout.write(text_prompt)
    for chunk in llm.stream(prompt, params):
        if args.n > 1 and chunk.text:
            sys.stdout.write(f"[{chunk.index}]")
        sys.stdout.write(chunk.text if llm.tokenizer is not None else f" {chunk.token_id}")
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0
