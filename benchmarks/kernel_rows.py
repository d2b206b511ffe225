"""Quantised matmuls by number of rows: aten's CPU int8 / int4 kernels against dequantise + matmul,
on this CPU's kernels and on the plain AVX2 ones.

    python benchmarks/kernel_rows.py                       # 2048 x 2048 weight, rows 1..256, both ISAs
    python benchmarks/kernel_rows.py --isa avx2 --n 4096 --k 1024 --rows 1,16,512

aten's _weight_int8pack_mm and _weight_int4pack_mm_for_cpu are matrix-vector kernels: their time
grows with the rows as if each row were its own call. trillion.quant.kernels switches to dequantising
the weight once and multiplying above a number of rows and in a dtype that `kernels.rows_path`
picks for this CPU: bf16 where oneDNN multiplies it on AMX, float32 elsewhere. This script prints, per row count, float32 F.linear (the peer), the
int8 kernel, dequantise + matmul in bf16 and in float32, what `kernels.int8_linear` picks, and the
same for int4, in milliseconds (median of --repeats; `--clock cpu` counts the CPU time of all threads
instead of wall time, which other jobs on a shared machine inflate).

`--isa avx2` runs in a child process with the variables that make this machine use the kernels an
AVX2-only CPU (an AMD EPYC before Zen 4) gets: ATen's AVX2 kernels, oneDNN capped at AVX2 (so bf16
matmuls leave oneDNN for PyTorch's fallback loops) and MKL's AVX2 GEMMs (an AMD EPYC's float32
prefill runs at AVX2-FMA speeds; for its exact float32 results the tests use MKL's SSE4.2 path, see
the README's "Tests"). The default, `--isa native,avx2`, prints both tables.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import time

from trillion.plan.hardware import cpu_name

AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def timed(fn, repeats: int, clock=time.perf_counter) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = clock()
        fn()
        times.append(clock() - t)
    return 1e3 * statistics.median(times)


def table(args) -> int:
    """One table, with the kernels this process was started with."""
    import torch
    import torch.nn.functional as F

    from trillion.quant import kernels
    from trillion.quant.integer import quantize_int4, quantize_int8, unpack_int4

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
    bf, f32 = torch.bfloat16, torch.float32
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    emulated = " ".join(f"{k}={v}" for k, v in AVX2_ENV.items() if os.environ.get(k) == v)
    print(
        f"{cpu_name()}, {torch.get_num_threads()} threads, ATen {torch.backends.cpu.get_cpu_capability()}, "
        f"bf16 matmul native: {kernels.NATIVE_BF16_MATMUL} (kernel up to {kernels.rows_path(bf)[0]} / "
        f"{kernels.rows_path(bf, int4=True)[0]} rows, then {kernels.rows_path(bf)[1]}), "
        f"{emulated or 'no ISA variables'}; torch {torch.__version__}; "
        f"weight {args.n} x {args.k}, {args.clock} ms, median of {args.repeats}, "
        f"load average {os.getloadavg()[0]:.1f}\n"
    )
    print(
        "| rows | float32 | int8 kernel | int8 dequant+mm bf16 | int8 dequant+mm f32 | int8 picked "
        "| int4 kernel | int4 dequant+mm bf16 | int4 dequant+mm f32 | int4 picked |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")

    def int4_dequant_mm(x, dt):
        w4 = kernels.dequantize_int4_codes(kernels.unpack_tinygemm(tiny, *layout), sz[..., 0].T, dt)
        return F.linear(x.to(dt), w4).float()

    paths = [
        lambda x: F.linear(x, w),
        lambda x: torch.ops.aten._weight_int8pack_mm(x.to(bf), q, s.to(bf)),
        lambda x: F.linear(x.to(bf), q.to(bf)).float() * s.float(),
        lambda x: F.linear(x, q.to(f32)) * s.float(),
        lambda x: kernels.int8_linear(x, q, s, bf),
        lambda x: torch.ops.aten._weight_int4pack_mm_for_cpu(x.to(bf), tiny, args.group, sz),
        lambda x: int4_dequant_mm(x, bf),
        lambda x: int4_dequant_mm(x, f32),
        lambda x: kernels.int4_linear(x, tiny, args.group, sz, layout),
    ]
    for m in (int(r) for r in args.rows.split(",")):
        x = torch.randn(m, args.k, generator=g)
        cells = [timed(functools.partial(path, x), args.repeats, clock) for path in paths]
        print(f"| {m} | " + " | ".join(f"{c:.3f}" for c in cells) + " |", flush=True)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--isa", default="native,avx2", help="native, avx2 or both (comma-separated)")
    ap.add_argument("--n", type=int, default=2048, help="output features")
    ap.add_argument("--k", type=int, default=2048, help="input features")
    ap.add_argument("--rows", default="1,4,8,12,16,24,32,64,128,256")
    ap.add_argument("--group", type=int, default=128, help="int4 group size")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: the process's CPU time (all threads), steadier than wall time on a shared machine",
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return table(args)
    isas = args.isa.split(",")
    if unknown := set(isas) - {"native", "avx2"}:
        ap.error(f"--isa: unknown {', '.join(sorted(unknown))}; expected native and/or avx2")
    rc = 0
    for i, isa in enumerate(isas):
        # the variables are read when torch loads, so each ISA gets a process of its own
        env = {k: v for k, v in os.environ.items() if k not in AVX2_ENV}
        if isa == "avx2":
            env.update(AVX2_ENV)
        print(("\n" if i else "") + f"## {isa}\n", flush=True)
        same = [f"--{k}={v}" for k, v in vars(args).items() if k not in ("isa", "child") and v is not None]
        rc |= subprocess.run([sys.executable, __file__, "--child", *same], env=env, check=False).returncode
    return rc


if __name__ == "__main__":
    sys.exit(main())
