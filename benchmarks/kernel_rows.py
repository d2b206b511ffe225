"""Quantised matmuls by number of rows: aten's CPU int8 / int4 kernels against dequantise + matmul.

    python benchmarks/kernel_rows.py                       # 2048 x 2048 weight, rows 1..256
    python benchmarks/kernel_rows.py --n 4096 --k 1024 --rows 1,16,512

aten's _weight_int8pack_mm and _weight_int4pack_mm_for_cpu are matrix-vector kernels: their time
grows with the rows as if each row were its own call. trillion.quant.kernels switches to dequantising
the weight once and running the BLAS matmul in the kernel dtype above INT8_PACK_ROWS / INT4_PACK_ROWS
rows; this script prints, in one run and per row count, float32 F.linear (the peer), both int8 paths,
both int4 paths and what `kernels.int8_linear` / `int4_linear` pick, in milliseconds (median of
--repeats).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from trillion.quant import kernels
from trillion.quant.integer import quantize_int4, quantize_int8, unpack_int4


def timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2048, help="output features")
    ap.add_argument("--k", type=int, default=2048, help="input features")
    ap.add_argument("--rows", default="1,4,8,12,16,32,64,128,256")
    ap.add_argument("--group", type=int, default=128, help="int4 group size")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    layout = kernels.tinygemm_layout()
    if not kernels.HAS_INT8_MM or layout is None:
        print("this PyTorch build has no CPU int8 / int4 kernels", file=sys.stderr)
        return 1
    g = torch.Generator().manual_seed(0)
    w = torch.randn(args.n, args.k, generator=g)
    q, s = quantize_int8(w)
    packed, s4 = quantize_int4(w, args.group)
    tiny = kernels.pack_tinygemm(unpack_int4(packed))
    sz = kernels.int4_scales_and_zeros(s4, torch.bfloat16)
    bf = torch.bfloat16
    print(
        f"weight {args.n} x {args.k}, {torch.get_num_threads()} threads, bf16 matmul native: "
        f"{kernels.FAST_BF16_MATMUL}, torch {torch.__version__}; ms, median of {args.repeats}\n"
    )
    print(
        "| rows | float32 | int8 kernel | int8 dequant+mm | int8 picked | int4 kernel | int4 dequant+mm "
        "| int4 picked |"
    )
    print("|---|---|---|---|---|---|---|---|")
    paths = [
        lambda x: F.linear(x, w),
        lambda x: torch.ops.aten._weight_int8pack_mm(x.to(bf), q, s.to(bf)),
        lambda x: F.linear(x.to(bf), q.to(bf)).float() * s.float(),
        lambda x: kernels.int8_linear(x, q, s, bf),
        lambda x: torch.ops.aten._weight_int4pack_mm_for_cpu(x.to(bf), tiny, args.group, sz),
        lambda x: F.linear(
            x.to(bf), kernels.dequantize_int4_codes(kernels.unpack_tinygemm(tiny, *layout), s4, bf)
        ),
        lambda x: kernels.int4_linear(x, tiny, args.group, sz, layout),
    ]
    for m in (int(r) for r in args.rows.split(",")):
        x = torch.randn(m, args.k, generator=g)
        cells = [timed(functools.partial(path, x), args.repeats) for path in paths]
        print(f"| {m} | " + " | ".join(f"{c:.3f}" for c in cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
