"""One prefill step of the lightning indexer against C entries: `trillion.engine.sparse.indexer_topk`
with the demo model's shapes (2,048 queries, 8 index heads of 32 dims, top-16), random scores.

    python benchmarks/indexer_topk.py --entries 8K 32K --threads 1
    git checkout 09c422e -- trillion/engine/sparse.py       # the indexer before its cache-sized groups ...
    python benchmarks/indexer_topk.py --entries 8K 32K --threads 1 --block 256   # ... with its blocks then
    git checkout HEAD -- trillion/engine/sparse.py

Prints seconds per step and the GFLOP/s of its matmuls (2 x T x H x d x C), next to a bare GEMM of the
same shape, on this CPU. Figures measured while other jobs load the machine are indicative only.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from trillion.engine import sparse
from trillion.kvcost import parse_tokens


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--entries", nargs="+", default=["8K", "32K"], help="entries C (the context / 4 for CSA)")
    p.add_argument("--queries", type=int, default=2048)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--block", type=int, default=None,
                   help="entries per block (default: the engine's, 4M / queries; before fb2cc3d it was 4M / queries / 8)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    t, h, d, k = a.queries, 8, 32, 16
    q, w = torch.randn(1, t, h, d, generator=g), torch.randn(1, t, h, generator=g).abs()
    block = a.block or (1 << 22) // t  # the engine's [T, Cb] scores block (trillion.engine.runner.BLOCK_ELEMENTS)
    with open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "unknown CPU")
    print(f"{cpu}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    for c in (parse_tokens(e) for e in a.entries):
        keys = torch.randn(c, d, generator=g)
        rows, ready = torch.arange(c)[None], torch.full((1, t, 1), c)
        sparse.indexer_topk(q, w, keys.__getitem__, rows, ready, k, block)  # warm-up
        t0 = time.perf_counter()
        sparse.indexer_topk(q, w, keys.__getitem__, rows, ready, k, block)
        dt = time.perf_counter() - t0
        x, y = q.reshape(t * h, d), keys[:block].T.contiguous()
        t1 = time.perf_counter()
        for _ in range(c // block):
            x @ y
        gemm = time.perf_counter() - t1
        flops = 2 * t * h * d * c
        print(f"C = {c:>7,}: {dt:6.2f} s a step, {flops / dt / 1e9:5.0f} GFLOP/s; "
              f"the bare GEMMs alone {gemm:5.2f} s, {flops / gemm / 1e9:5.0f} GFLOP/s")


if __name__ == "__main__":
    main()
