"""MTP self-speculative decoding against plain decoding on a trained model, same run.

    python benchmarks/mtp_bench.py                      # the shipped demo model, the default engine
    python benchmarks/mtp_bench.py --compile false      # eager

For each prompt: greedy decoding of --new-tokens tokens plainly and with speculative="mtp" at each
number of draft tokens (with the default compile="auto": after the background compilation of
the graphs a warm-up needed is done); prints decode tokens/s (after the first token), the drafts' acceptance
rate, and whether the speculative tokens equal the plain ones (they must: greedy verification).
Random weights are useless here (their MTP block agrees with the model by chance only), so the
default is the shipped demo model; --model takes any checkpoint folder with a tokenizer.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from trillion.engine import LLM, SamplingParams

PROMPTS = ["def fibonacci(n):", "import os\n\n\ndef main():", "class Stack:\n    def __init__(self):",
           "for i in range(10):"]


def run(llm: LLM, prompts: list[str], new_tokens: int) -> tuple[float, float | None, list[list[int]]]:
    params = SamplingParams(temperature=0, max_new_tokens=new_tokens, ignore_eos=True)
    tps, acc, ids = [], [], []
    for p in prompts:  # one at a time: batch 1
        out = llm.generate([p], params)[0]
        tps.append(out.stats["decode_tokens_per_s"])
        if "acceptance_rate" in out.stats:
            acc.append(out.stats["acceptance_rate"])
        ids.append(out.token_ids)
    return statistics.median(tps), (statistics.mean(acc) if acc else None), ids


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint folder (default: the shipped demo model)")
    ap.add_argument("--new-tokens", type=int, default=96)
    ap.add_argument("--drafts", default="1,2", help="numbers of draft tokens to try")
    ap.add_argument("--compile", default="auto", choices=("auto", "true", "false"),
                    help="LLM(compile=...): auto (the default engine), true, false; warm-up untimed")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from trillion.cli.common import resolve_model

    model = resolve_model(args.model)
    print(f"model {model}, {torch.get_num_threads()} threads, compile={args.compile}, torch {torch.__version__}")
    rows = []
    for k in [0] + [int(x) for x in args.drafts.split(",")]:
        spec = {"speculative": "mtp", "num_draft_tokens": k} if k else {}
        llm = LLM(model, max_seqs=2, compile={"auto": "auto", "true": True, "false": False}[args.compile], **spec)
        t = time.perf_counter()
        for _ in range(2):  # warm-up: compilation (compile="auto": graphs queued on first use, then ready)
            run(llm, PROMPTS[:1], 24)
            llm.engine.runner.wait_compiled()
        print(f"  warm-up (drafts {k}): {time.perf_counter() - t:.1f} s", file=sys.stderr)
        rows.append((k, *run(llm, PROMPTS, args.new_tokens)))
    base_tps, _, base_ids = rows[0][1:]
    print()
    print("| draft tokens | decode tok/s (median of prompts) | speed-up | acceptance | tokens equal plain greedy |")
    print("|---|---|---|---|---|")
    for k, tps, acc, ids in rows:
        print(f"| {k or 'none'} | {tps:.1f} | {tps / base_tps:.2f}x | "
              f"{'-' if acc is None else f'{100 * acc:.0f}%'} | {'yes' if ids == base_ids else 'NO'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
