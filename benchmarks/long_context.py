"""Long context through the engine: prefill tokens/s, decode ms/token, peak RSS and state bytes at
8K .. 1M tokens, for the shipped demo model (to 1M) and bench-94m (to 256K, random weights).

    python benchmarks/long_context.py                              # every row not yet measured
    python benchmarks/long_context.py --rows demo:8K demo:64K      # some rows
    python benchmarks/long_context.py --rows demo:1M --force       # measure again
    python benchmarks/long_context.py --plot-only                  # table + plot from the saved rows
    python benchmarks/long_context.py --threads 1 --max-prefill-s 600   # a loaded machine; long rows stop

--max-prefill-s stops a row's prefill after that long and records it as partial: the tokens it reached,
the time of every prefill step, and the full prefill's time extrapolated from them (`extrapolate`).

Each row runs in its own process (its peak RSS is its own) and writes OUT/<model>-<tokens>.json;
rows already in OUT are skipped unless --force, so an interrupted run resumes where it stopped.
A row: a random-token prompt of N tokens (the engine's speed does not depend on the text),
prefilled in chunks of --chunk tokens, then --decode greedy tokens; positions past the model's
limit (demo: 65,536) with allow_long_context. Prefill time = time to the first token; decode
ms/token = the time of the tokens after the first, per token. Peak RSS = ru_maxrss of the row's
process; "state" = the bytes the pool holds at the end (StatePool.used_bytes), next to what
`trillion kv` predicts for the pool's dtype.

The machine: the CPU's fp32 GEMM GFLOP/s (a large square product, and the indexer's block shape
[T*H, d] @ [d, Cb]), written to OUT/cpu.json, with the load average at each row.

The plot (OUT/decode.png, copied to docs/long-context-decode.png by --docs): decode ms/token against
context, and the line a dense-attention model of the same size would follow: the measured 8K time
scaled by the FLOPs of a decode step that attends to every token in every layer (weights + 4 x heads
x head_dim per key and layer), against the same for V4's own schedule (trillion.kvcost.v4_flops).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the trillion command: idle threads sleep

import torch

from trillion.plan.hardware import cpu_name

DEFAULT_ROWS = [f"demo:{n}" for n in ("8K", "64K", "256K", "1M")] + [f"bench-94m:{n}" for n in ("8K", "64K", "256K")]
OUT = Path(__file__).resolve().parent / "results" / "long_context"


def gemm_gflops(m: int, k: int, n: int, seconds: float = 1.0) -> float:
    """fp32 [m, k] @ [k, n], best of repeated timings over about `seconds`."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    a @ b
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * m * k * n / best / 1e9


def measure_cpu(out: Path) -> dict:
    info = {
        "cpu": cpu_name(), "threads": torch.get_num_threads(), "load_average": os.getloadavg(),
        "gemm_square_2048_gflops": gemm_gflops(2048, 2048, 2048),
        # the indexer's blocks: [T*H, d] @ [d, Cb] (demo: T 512, H 8, d 32; bench-94m: H 16, d 64)
        "gemm_indexer_demo_gflops": gemm_gflops(512 * 8, 32, 1024),
        "gemm_indexer_bench94m_gflops": gemm_gflops(512 * 16, 64, 512),
    }
    (out / "cpu.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def parse_row(row: str) -> tuple[str, int]:
    from trillion.kvcost import parse_tokens

    model, _, n = row.partition(":")
    return model, parse_tokens(n)


def row_path(out: Path, model: str, n: int) -> Path:
    return out / f"{model}-{n}.json"


# ---------------------------------------------------------------------------------- one row (child process)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_row(model_name: str, n: int, args) -> dict:
    from trillion.engine import LLM
    from trillion.engine.sampling import SamplingParams
    from trillion.kvcost import kv_cost

    load_avg = [os.getloadavg()]
    llm = LLM(model_name, max_seqs=1, max_model_len=max(n + args.decode + 1, 1), allow_long_context=True,
              prefill_chunk=args.chunk, kv_dtype=args.kv_dtype, dtype=None)
    eng, cfg = llm.engine, llm.model.cfg
    model_bytes = sum(p.numel() * p.element_size() for p in llm.model.parameters())
    rss_loaded = rss_bytes()
    ids = torch.randint(0, cfg.vocab_size, (n,), generator=torch.Generator().manual_seed(0)).tolist()
    eng.add_request(ids, SamplingParams(temperature=0, max_new_tokens=args.decode, ignore_eos=True))
    t0 = time.perf_counter()
    first, state = None, None
    stamps = []
    chunks = []  # [prompt tokens prefilled after the step, seconds of the step]: how a chunk's cost grows
    last_report = last = t0
    while eng.has_work():
        events = eng.step()
        now = time.perf_counter()
        if first is None and eng.running:
            chunks.append([eng.running[0].prefilled, now - last])
        last = now
        for ev in events:
            if ev.token_id is not None:
                stamps.append(now)
                if first is None:
                    first, state = now, eng.pool.used_bytes()  # the prompt's state
        if first is None and now - last_report > 60:
            done = eng.running[0].prefilled if eng.running else 0
            rate = done / (now - t0)
            print(f"  {model_name} {n}: {done}/{n} prefilled, {rate:.0f} tok/s, ~{(n - done) / max(rate, 1e-9) / 60:.0f}"
                  " min left", file=sys.stderr, flush=True)
            load_avg.append(os.getloadavg())
            last_report = now
        if first is None and args.max_prefill_s and now - t0 > args.max_prefill_s:
            state = eng.pool.used_bytes()
            eng.abort(list(eng.running))
            break
    partial = first is None
    prefill_s = (first or last) - t0
    decode_ms = (stamps[-1] - stamps[0]) / (len(stamps) - 1) * 1e3 if len(stamps) > 1 else None
    load_avg.append(os.getloadavg())
    precision = "release" if args.kv_dtype == "fp8" else "bf16"
    kv = kv_cost(cfg, n, matmul_params=1)
    predicted = (kv.bytes + kv.mtp_bytes) if precision == "release" else (kv.bytes_bf16 + kv.mtp_bytes_bf16)
    if llm.model.dtype == torch.float32 and args.kv_dtype == "auto":
        predicted *= 2  # the bf16 column at 4 bytes a value (the compressor state is float32 in both)
    done = chunks[-1][0] if chunks else 0
    return {
        "model": model_name, "tokens": n, "prefill_chunk": args.chunk, "kv_dtype": args.kv_dtype,
        "dtype": str(llm.model.dtype).replace("torch.", ""), "decode_tokens": args.decode,
        "partial": partial, "prefilled_tokens": done if partial else n,
        "prefill_s": prefill_s, "prefill_tok_s": (done if partial else n) / prefill_s,
        "prefill_s_extrapolated": extrapolate(chunks, n) if partial else None, "chunk_seconds": chunks,
        "decode_ms_per_token": decode_ms,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rss_after_load_bytes": rss_loaded, "model_bytes": model_bytes,
        "state_bytes": sum(state.values()), "state_by_part": state, "kv_predicted_bytes": predicted,
        "load_average": load_avg, "cpu": cpu_name(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def extrapolate(chunks: list[list[float]], n: int) -> float | None:
    """Seconds to prefill n tokens, from the steps measured: a step of `chunk` tokens ending at position p
    costs a + b p (the indexer's and HCA's work grows with the entries before it), a and b fitted by least
    squares over the second half of the steps (past the start-up), summed over every step to n."""
    pts = [(p, s) for p, s in chunks[len(chunks) // 2 :] if s > 0]
    if len(pts) < 2:
        return None
    xs, ys = torch.tensor([p for p, _ in pts], dtype=torch.float64), torch.tensor([s for _, s in pts], dtype=torch.float64)
    b = float(((xs - xs.mean()) * (ys - ys.mean())).sum() / ((xs - xs.mean()) ** 2).sum())
    a = float(ys.mean()) - b * float(xs.mean())
    step = chunks[1][0] - chunks[0][0] if len(chunks) > 1 else chunks[0][0]
    done, spent = chunks[-1][0], sum(s for _, s in chunks)
    ends = torch.arange(done + step, n + step, step, dtype=torch.float64).clamp(max=n)
    return spent + float((a + b * ends).sum())


# ---------------------------------------------------------------------------------- table and plot


def fmt_tokens(n: int) -> str:
    from trillion.kvcost import format_tokens

    return format_tokens(n)


def table(rows: list[dict]) -> str:
    header = ("| model | context | prefill | prefill tok/s | decode ms/token | peak RSS | model | state (pool) "
              "| load avg |")
    lines = [header, "|" + "---|" * 9]
    for r in rows:
        mib = lambda b: f"{b / 2**20:,.0f} MiB"
        load = max(max(a) for a in r["load_average"])
        if r.get("partial"):
            extra = r.get("prefill_s_extrapolated")
            prefill = (f"stopped at {fmt_tokens(r['prefilled_tokens'])} after {r['prefill_s']:,.0f} s"
                       + (f"; ~{extra / 3600:,.1f} h extrapolated" if extra and extra > 3600
                          else f"; ~{extra:,.0f} s extrapolated" if extra else ""))
            rate = f"{r['prefill_tok_s']:,.0f} (to {fmt_tokens(r['prefilled_tokens'])})"
        else:
            prefill, rate = f"{r['prefill_s']:,.1f} s", f"{r['prefill_tok_s']:,.0f}"
        decode = f"{r['decode_ms_per_token']:.1f}" if r["decode_ms_per_token"] else "-"
        lines.append(
            f"| {r['model']} | {fmt_tokens(r['tokens'])} | {prefill} | {rate} | {decode} | {mib(r['peak_rss_bytes'])} "
            f"| {mib(r['model_bytes'])} | {mib(r['state_bytes'])} | {load:.1f} |")
    return "\n".join(lines)


def dense_flops(cfg, n: int, matmul_params: int) -> float:
    """Decode FLOPs of a dense-attention model of the same size: every layer attends to all n tokens."""
    return 2 * matmul_params + cfg.n_layers * 4 * cfg.n_heads * cfg.head_dim * n


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trillion.cli.params import resolve_config
    from trillion.kvcost import v4_flops, v4_matmul_params

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, model in enumerate(dict.fromkeys(r["model"] for r in rows)):
        mine = sorted((r for r in rows if r["model"] == model and r["decode_ms_per_token"]), key=lambda r: r["tokens"])
        if not mine:
            continue
        cfg = resolve_config(model)
        mp = v4_matmul_params(cfg)
        xs = [r["tokens"] for r in mine]
        color = f"C{i}"
        ax.plot(xs, [r["decode_ms_per_token"] for r in mine], "o-", color=color, label=f"{model}: measured")
        base, t0 = mine[0]["tokens"], mine[0]["decode_ms_per_token"]
        grid = sorted(x for x in set(xs) | {2**k for k in range(10, 21)} if base <= x <= max(xs))
        dense = [t0 * dense_flops(cfg, x, mp) / dense_flops(cfg, base, mp) for x in grid]
        v4 = [t0 * sum(v4_flops(cfg, x, mp).values()) / sum(v4_flops(cfg, base, mp).values()) for x in grid]
        ax.plot(grid, dense, "--", color=color, label=f"{model}: dense attention, same size (FLOPs from {fmt_tokens(base)})")
        ax.plot(grid, v4, ":", color=color, label=f"{model}: V4 schedule's FLOPs (from {fmt_tokens(base)})")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("context (tokens)")
    ax.set_ylabel("decode ms / token (batch 1)")
    ax.set_title("Decode time against context (" + cpu_name() + ")", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# ---------------------------------------------------------------------------------- main


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, metavar="MODEL:TOKENS",
                   help="rows to measure (model: demo, a flavor or a folder; tokens: 8K, 1M ...)")
    p.add_argument("--out", type=Path, default=OUT, help="folder of the per-row JSON files and the plot")
    p.add_argument("--force", action="store_true", help="measure rows that are already in --out")
    p.add_argument("--chunk", type=int, default=2048, help="prefill chunk (tokens per prefill step)")
    p.add_argument("--decode", type=int, default=33, help="greedy tokens generated after the prompt")
    p.add_argument("--kv-dtype", default="auto", choices=["auto", "bf16", "float32", "fp8"])
    p.add_argument("--threads", type=int, default=None, help="torch threads per row (default: torch's choice)")
    p.add_argument("--max-prefill-s", type=float, default=None,
                   help="stop a row's prefill after this many seconds and extrapolate its time from the steps so far")
    p.add_argument("--plot-only", action="store_true", help="only the table and plot of the saved rows")
    p.add_argument("--docs", action="store_true", help="also copy the plot to docs/long-context-decode.png")
    p.add_argument("--row", nargs=2, metavar=("MODEL", "TOKENS"), help=argparse.SUPPRESS)  # the child
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.row:
        model, n = args.row[0], int(args.row[1])
        r = run_row(model, n, args)
        row_path(args.out, model, n).write_text(json.dumps(r, indent=2) + "\n")
        return 0
    if not args.plot_only:
        print(json.dumps(measure_cpu(args.out)), file=sys.stderr)
        for row in args.rows:
            model, n = parse_row(row)
            path = row_path(args.out, model, n)
            if path.exists() and not args.force:
                print(f"{row}: measured ({path.name}); --force measures it again", file=sys.stderr)
                continue
            print(f"{row}: measuring ...", file=sys.stderr, flush=True)
            cmd = [sys.executable, __file__, "--row", model, str(n), "--out", str(args.out), "--chunk", str(args.chunk),
                   "--decode", str(args.decode), "--kv-dtype", args.kv_dtype]
            cmd += ["--threads", str(args.threads)] if args.threads else []
            cmd += ["--max-prefill-s", str(args.max_prefill_s)] if args.max_prefill_s else []
            if subprocess.call(cmd) != 0:
                print(f"{row}: failed", file=sys.stderr)
    rows = [json.loads(f.read_text()) for f in sorted(args.out.glob("*-*.json"))]
    rows.sort(key=lambda r: (r["model"], r["tokens"]))
    cpu = json.loads((args.out / "cpu.json").read_text()) if (args.out / "cpu.json").exists() else {}
    print(f"CPU: {cpu.get('cpu', cpu_name())}, {cpu.get('threads')} threads; fp32 GEMM {cpu.get('gemm_square_2048_gflops', 0):.0f} "
          f"GFLOP/s (2048^3), indexer blocks {cpu.get('gemm_indexer_demo_gflops', 0):.0f} (demo) / "
          f"{cpu.get('gemm_indexer_bench94m_gflops', 0):.0f} (bench-94m) GFLOP/s; load average at the time "
          f"{cpu.get('load_average')}")
    print(table(rows))
    if any(r["decode_ms_per_token"] for r in rows):
        plot(rows, args.out / "decode.png")
        if args.docs:
            docs = Path(__file__).resolve().parent.parent / "docs" / "long-context-decode.png"
            docs.write_bytes((args.out / "decode.png").read_bytes())
        print(f"plot: {args.out / 'decode.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
