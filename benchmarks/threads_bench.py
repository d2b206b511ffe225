"""OpenMP's wait policy and a competing process: the time of a 64-token greedy generate on the demo model.

    python benchmarks/threads_bench.py                 # 3 runs per setting
    python benchmarks/threads_bench.py --runs 5

Each setting runs in a fresh process (OpenMP reads OMP_WAIT_POLICY once, when torch loads it):
OpenMP's own default (the variable unset: worker threads spin a while before they sleep), PASSIVE
(what `trillion` now sets unless the user set it), and one thread; each alone and beside a busy
competitor (`python -c 'while True: pass'`). Prints the median seconds of the generate call alone
(model loading not timed), side by side, and the CPU it ran on.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from trillion.plan.hardware import cpu_name

SETTINGS = {  # name -> (OMP_WAIT_POLICY or None for unset, torch threads or None for the default)
    "OpenMP default": (None, None),
    "PASSIVE": ("PASSIVE", None),
    "1 thread": (None, 1),
}


def child(threads: int | None, tokens: int) -> None:
    import torch

    from trillion import LLM, SamplingParams

    if threads:
        torch.set_num_threads(threads)
    llm = LLM(max_seqs=1)
    params = SamplingParams(temperature=0, max_new_tokens=tokens, ignore_eos=True)
    llm.generate("def f():", SamplingParams(temperature=0, max_new_tokens=4))  # warm-up
    t0 = time.perf_counter()
    llm.generate("def f():", params)
    print(f"{time.perf_counter() - t0:.3f} {torch.get_num_threads()}")


def measure(policy: str | None, threads: int | None, tokens: int) -> tuple[float, int]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    cmd = [sys.executable, __file__, "--child", "--tokens", str(tokens)] + (["--threads", str(threads)] if threads else [])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), int(out[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.threads, args.tokens)
        return 0
    print(f"{cpu_name()}, {os.cpu_count()} CPUs; {args.tokens}-token greedy generate on the demo model, "
          f"median of {args.runs} (seconds, generate call only)")
    print(f"{'setting':<16} {'threads':>7} {'alone':>8} {'+ busy process':>15}")
    for name, (policy, threads) in SETTINGS.items():
        row = {}
        for busy in (False, True):
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
            try:
                runs = [measure(policy, threads, args.tokens) for _ in range(args.runs)]
            finally:
                if hog is not None:
                    hog.kill()
                    hog.wait()
            row[busy] = statistics.median(t for t, _ in runs)
            n_threads = runs[0][1]
        print(f"{name:<16} {n_threads:>7} {row[False]:>8.2f} {row[True]:>15.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
