"""Where a compiled batch-1 decode step spends its time: per op kind, time per step, weight bytes
read and the bandwidth that gives, against the machine's measured read bandwidth.

    python benchmarks/decode_profile.py                      # bench-94m, 2 threads, 32 steps
    python benchmarks/decode_profile.py --flavor bench-1b --threads 1

Builds the flavor with seeded random weights (float32), runs the default `LLM(model)` until its decode step is compiled (with
--kernel-names inductor's kernel profiling on, so each fused C++ kernel shows by name), warms up, then profiles --steps greedy
decode steps with torch.profiler (shapes recorded). Matmuls are grouped by their weight's shape
(the bytes they must read: K x N x 4); inductor's fused kernels by name. "outside ops" is the step's
wall time not inside any profiled op: the engine's Python, sampling, the graph's wrapper.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time

MATMULS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::_weight_int8pack_mm"}


def weight_bytes(name: str, shapes, elem: int = 4) -> int:
    """Bytes of the second operand (the weight) of a matmul call."""
    try:
        if name == "aten::addmm":
            k, n = shapes[2]
        elif name == "aten::linear":
            n, k = shapes[1]
        elif name == "aten::bmm":
            b, k, n = shapes[1]
            return b * k * n * elem
        else:
            k, n = shapes[1]
        return k * n * elem
    except (ValueError, IndexError, TypeError):
        return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flavor", default="bench-94m")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--kernel-names", action="store_true",
                    help="name inductor's fused kernels (a different inductor config: compiles afresh)")
    args = ap.parse_args(argv)

    import torch
    import torch._inductor.config as inductor_config
    from torch.profiler import ProfilerActivity, profile

    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from llamacpp_bench import bandwidth_gbs, cpu_name, trillion_active_bytes

    from trillion import LLM, SamplingParams
    from trillion.checkpoint import load_model

    torch.set_num_threads(args.threads)
    inductor_config.cpp.enable_kernel_profile = args.kernel_names
    bw = bandwidth_gbs(args.threads)
    model = load_model(args.flavor, seed=args.seed)
    active = trillion_active_bytes(model)
    llm = LLM(model, max_model_len=1024)  # the default engine (and llamacpp_bench's shapes: its cache serves)
    prompt = list(range(2, 18))
    params = SamplingParams(temperature=0, max_new_tokens=args.steps + 1, ignore_eos=True)
    t = time.perf_counter()
    llm.generate([prompt], params)  # warm-up; the decode step compiles in the background
    llm.engine.runner.wait_compiled()
    llm.generate([prompt], params)
    print(f"{cpu_name()}, {args.threads} threads, read bandwidth {bw:.1f} GB/s, torch {torch.__version__}; "
          f"{args.flavor}, {active / 1e6:.1f} MB of weights per token; warm-up {time.perf_counter() - t:.0f} s")
    out = llm.generate([prompt], params)[0]
    step_s = 1 / out.stats["decode_tokens_per_s"]
    engine, n = llm.engine, args.steps
    engine.add_request(prompt, params)
    engine.step()  # the prompt's prefill and first token: not profiled
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(n):
            engine.step()
    while engine.has_work():
        engine.step()

    rows: dict[str, list] = collections.defaultdict(lambda: [0.0, 0, 0])  # key -> [self us, calls, bytes]
    for e in prof.events():
        if e.name.startswith(("Torch-Compiled Region", "## Call CompiledFxGraph", "ProfilerStep")):
            continue
        if e.device_type.name != "CPU" or e.cpu_parent is not None and e.cpu_parent.name in MATMULS:
            continue
        if e.name in MATMULS:
            b = weight_bytes(e.name, e.input_shapes)
            key = f"{e.name} {b / 1e6:.2f} MB weight"
        else:
            b, key = 0, e.name
        r = rows[key]
        r[0] += e.self_cpu_time_total
        r[1] += 1
        r[2] += b
    total_ops = sum(r[0] for r in rows.values()) / 1e6
    print(f"\ndecode {1 / step_s:.1f} tok/s unprofiled = {1e3 * step_s:.2f} ms/step; roofline "
          f"{bw * 1e9 / active:.1f} tok/s ({1e3 * active / (bw * 1e9):.2f} ms/step); profiled ops "
          f"{1e3 * total_ops / n:.2f} ms/step\n")
    print("| op (per decode step) | calls | ms | MB read | GB/s |")
    print("|---|---|---|---|---|")
    for key, (us, calls, b) in sorted(rows.items(), key=lambda kv: -kv[1][0])[: args.top]:
        ms = us / 1e3 / n
        gbs = f"{b / (us / 1e6) / 1e9:.1f}" if b else "-"
        print(f"| {key} | {calls / n:.1f} | {ms:.3f} | {b / n / 1e6:.2f} | {gbs} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
