"""Before/after: prefill and decode tok/s of two source trees of trillion, run alternately, same machine.

    git worktree add --detach /tmp/before b637747
    python benchmarks/ab_trees.py /tmp/before .                    # eager, batch 1, 6 rounds
    python benchmarks/ab_trees.py /tmp/before . --batch 8 --rounds 3

Each measurement is a fresh process with PYTHONPATH set to one tree (so `import trillion` is that
tree's code; the installed dependencies are shared): bench-94m with seeded random weights, `LLM(model,
max_seqs=8, compile=...)`, a warm-up generate, then --batch prompts of 256 random tokens and --new-tokens (48)
greedy tokens; decode tok/s = tokens after the first / the time after it; prefill tok/s = prompt
tokens / time to the last sequence's first token, the median of --prefills (7) such prefills (one
alone spread by +-10% here). The trees alternate within each round, so slow drifts of the machine
hit both. Prints every run and the medians, with the CPU's name.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from trillion.plan.hardware import cpu_name

CHILD = r"""
import json, sys, time, torch
from trillion.engine import LLM, SamplingParams
from trillion.flavors import get_flavor
from trillion.model import Transformer
from trillion.model.init import init_weights
compile_, batch, threads, new = sys.argv[1] == "compile", int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
prefills = int(sys.argv[5])
torch.set_num_threads(threads)
cfg = get_flavor("bench-94m")
model = init_weights(Transformer(cfg), seed=0).eval()
g = torch.Generator().manual_seed(1)
prompts = torch.randint(2, cfg.vocab_size, (8, 256), generator=g).tolist()
llm = LLM(model, max_seqs=8, compile=compile_)
llm.generate(prompts[:batch], SamplingParams(temperature=0, max_new_tokens=4, ignore_eos=True))
outs = llm.generate(prompts[:batch], SamplingParams(temperature=0, max_new_tokens=new, ignore_eos=True))
first = max(o.stats["time_to_first_token_s"] for o in outs)
total = max(o.stats["total_time_s"] for o in outs)
firsts = [first]
for _ in range(prefills - 1):  # one prefill alone is noisy (+-10% here)
    outs = llm.generate(prompts[:batch], SamplingParams(temperature=0, max_new_tokens=1, ignore_eos=True))
    firsts.append(max(o.stats["time_to_first_token_s"] for o in outs))
first_med = sorted(firsts)[len(firsts) // 2]
print(json.dumps({"prefill": 256 * batch / first_med, "decode": batch * (new - 1) / (total - first)}))
"""


def run(tree: str, args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(tree).resolve()), "TRILLION_COMPILE": "0"}
    if args.compile:  # one inductor cache per tree: the pre-rewrite tree aborted on the other's cache
        env["TORCHINDUCTOR_CACHE_DIR"] = str(Path(args.cache) / Path(tree).resolve().name)
    cmd = [sys.executable, "-c", CHILD, "compile" if args.compile else "eager", str(args.batch), str(args.threads),
           str(args.new_tokens), str(args.prefills)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd="/")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--new-tokens", type=int, default=48, help="greedy tokens per sequence (decode: all but the first)")
    p.add_argument("--prefills", type=int, default=7, help="prefills per process; its prefill tok/s is their median")
    p.add_argument("--compile", action="store_true", help="compile=True in both trees (compile time not timed)")
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "ab_trees_inductor"),
                   help="with --compile: inductor caches go to CACHE/<tree folder name>")
    args = p.parse_args()
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for r in range(args.rounds):
        for name in ("before", "after"):
            res = run(getattr(args, name), args)
            runs[name].append(res)
            print(f"round {r + 1} {name}: prefill {res['prefill']:.0f} tok/s, decode {res['decode']:.1f} tok/s, "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)
    print(f"\n{cpu_name()}, {args.threads} threads, batch {args.batch}, {'compiled' if args.compile else 'eager'}, "
          f"median of {args.rounds}:")
    print("| tree | prefill tok/s | decode tok/s |\n|---|---|---|")
    for name in ("before", "after"):
        med = {k: statistics.median(x[k] for x in runs[name]) for k in ("prefill", "decode")}
        print(f"| {name} ({getattr(args, name)}) | {med['prefill']:.0f} | {med['decode']:.1f} |")


if __name__ == "__main__":
    main()
