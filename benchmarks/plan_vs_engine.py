"""Does `trillion plan` predict this CPU? The plan's decode tokens/s against the engine's, same run.

    python benchmarks/plan_vs_engine.py                      # bench-1b, float32, batch 1, compiled engine
    python benchmarks/plan_vs_engine.py --flavor bench-94m --new-tokens 32 --eager

Measures the read bandwidth and the float32 matmul rate (trillion.plan.hardware, the figures
`trillion plan --hardware cpu` uses), plans the flavor on this machine at the decode's mean context,
then generates greedily with the engine (seeded random weights, float32; warm-up untimed, decode
timed after the first token, as benchmarks/decode_bench.py) and prints planned and measured decode
tokens/s side by side. Bandwidth is measured before and after the engine run: on a shared machine it
moves, so the prediction is given for both and the figures are indicative.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from trillion.engine import LLM, SamplingParams
from trillion.flavors import get_flavor
from trillion.model import Transformer
from trillion.model.init import init_weights
from trillion.plan import Request, plan, v4_costs
from trillion.plan.hardware import cpu_hardware, cpu_name, measure_bandwidth, measure_flops

TOLERANCE = 0.30  # the target: within 30%


def engine_decode(model, cfg, prompt_len: int, new_tokens: int, batch: int, compile: bool) -> float:
    llm = LLM(model, max_seqs=max(8, batch), compile=compile)
    g = torch.Generator().manual_seed(1)
    prompts = torch.randint(2, cfg.vocab_size, (batch, prompt_len), generator=g).tolist()
    t = time.perf_counter()
    llm.generate(prompts, SamplingParams(temperature=0, max_new_tokens=4, ignore_eos=True))  # warm-up / compile
    print(f"  engine warm-up (compile={compile}): {time.perf_counter() - t:.1f} s", file=sys.stderr)
    outs = llm.generate(prompts, SamplingParams(temperature=0, max_new_tokens=new_tokens, ignore_eos=True))
    first = max(o.stats["time_to_first_token_s"] for o in outs)
    total = max(o.stats["total_time_s"] for o in outs)
    return batch * (new_tokens - 1) / (total - first)


def planned(cfg, bandwidth: float, flops: float, context: int, batch: int):
    hw = cpu_hardware(bandwidth, flops, cache=False)
    return plan(Request(v4_costs(cfg), hw, 1, precision="fp32", context=context, batch=batch))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flavor", default="bench-1b")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--eager", action="store_true", help="the engine without torch.compile")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = get_flavor(args.flavor)
    context = args.prompt_len + args.new_tokens // 2  # the decode's mean context
    print(f"machine: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}")

    flops = measure_flops()
    bw_before = measure_bandwidth()
    model = init_weights(Transformer(cfg), seed=0).eval()
    measured = engine_decode(model, cfg, args.prompt_len, args.new_tokens, args.batch, compile=not args.eager)
    bw_after = measure_bandwidth()

    rows = []
    for label, bw in (("before", bw_before), ("after", bw_after)):
        p = planned(cfg, bw, flops, context, args.batch)
        rows.append((label, bw, p.decode_tokens_per_s_device, p.decode.binding))
    print(f"\n{args.flavor}, float32, batch {args.batch}, prompt {args.prompt_len}, {args.new_tokens} new tokens "
          f"(plan at context {context}); float32 matmul {flops / 1e9:.0f} GFLOP/s; engine compile={not args.eager}")
    print("\n| bandwidth measured | GB/s | planned decode tok/s | bound | engine decode tok/s | engine / plan |")
    print("|---|---|---|---|---|---|")
    ok = False
    for label, bw, rate, binding in rows:
        ratio = measured / rate
        ok |= abs(ratio - 1) <= TOLERANCE
        print(f"| {label} the engine run | {bw / 1e9:.1f} | {rate:.1f} | {binding} | {measured:.1f} | {ratio:.2f} |")
    print(f"\nwithin {TOLERANCE:.0%} of a plan: {'yes' if ok else 'no'} (shared machine: indicative figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
