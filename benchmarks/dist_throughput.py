"""Decode tokens/s of the distributed engine with 1, 2 and 4 processes on this machine (indicative).

    python benchmarks/dist_throughput.py                       # bench-94m, 8 prompts, worlds 1 2 4
    python benchmarks/dist_throughput.py --flavor tiny --worlds 1 2

Each world runs `torchrun --nproc-per-node W benchmarks/dist_throughput.py --worker ...`: dp = W,
tp = 1 (data-parallel attention, the experts split over every process), one thread per process.
Rank 0 generates --new-tokens greedy tokens for each of --prompts random prompts at once (one
untimed warm-up first) and reports generated tokens per second of wall time, and time to the first
token of the batch. On a machine with fewer cores than processes the figures say more about the
scheduler than the engine: they are printed with the CPU's name and core count.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from trillion.plan.hardware import cpu_name


def worker(args) -> None:
    import torch

    from trillion.engine import LLM, SamplingParams
    from trillion.parallel.launch import running, start

    world = int(os.environ.get("WORLD_SIZE", "1"))
    g = torch.Generator().manual_seed(0)
    engine = start(args.flavor, tp=1, dp=world, max_seqs=args.prompts)
    with running(engine) as leader:
        if leader:
            llm = LLM(engine=engine)
            vocab = engine.cfg.vocab_size
            prompts = [torch.randint(0, vocab, (args.prompt_len,), generator=g).tolist() for _ in range(args.prompts)]
            params = SamplingParams(max_new_tokens=args.new_tokens, temperature=0, ignore_eos=True)
            llm.generate(prompts[:2], SamplingParams(max_new_tokens=4, temperature=0))  # warm-up
            t = time.perf_counter()
            outs = llm.generate(prompts, params)
            wall = time.perf_counter() - t
            n = sum(len(o.token_ids) for o in outs)
            ttft = max(o.stats["time_to_first_token_s"] for o in outs)
            print("RESULT " + json.dumps({"world": world, "tokens": n, "wall_s": wall, "tok_s": n / wall,
                                          "ttft_s": ttft}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--flavor", default="bench-94m")
    p.add_argument("--worlds", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    rows = []
    for w in args.worlds:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(w), "--standalone",
               __file__, "--worker", "--flavor", args.flavor, "--prompts", str(args.prompts),
               "--prompt-len", str(args.prompt_len), "--new-tokens", str(args.new_tokens)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"world {w} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
        rows.append(json.loads(line[7:]))
    print(f"{args.flavor}, {args.prompts} prompts x {args.new_tokens} greedy tokens, dp = processes, tp = 1, "
          f"1 thread each; {cpu_name()}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}")
    print("| processes | tokens/s | wall | time to first token (last of the batch) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['world']} | {r['tok_s']:.1f} | {r['wall_s']:.2f} s | {r['ttft_s']:.2f} s |")


if __name__ == "__main__":
    main()
