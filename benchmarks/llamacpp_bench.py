"""trillion against llama.cpp on the same V4 weights, in the same run.

    pip install 'trillion[llamacpp]'        # llama-cpp-python builds llama.cpp from source (minutes)
    python benchmarks/llamacpp_bench.py                         # bench-94m, 2 threads
    python benchmarks/llamacpp_bench.py --flavor bench-1b --engines llama-f32,trillion

Builds the flavor with seeded random weights (float32), saves it as a trillion checkpoint (hf layout)
and as an int8 checkpoint (weight-only INT8 on attention, experts and the head), exports GGUF files
for llama.cpp with `trillion export` (f32 and q8_0), then runs each engine in its own fresh process:

  llama-f32, llama-q8_0       llama.cpp through llama-cpp-python (default context settings, f16 KV;
                              no extra weight buffers unless --llama-extra-buffers: see llama_runner)
  trillion                    `trillion.LLM(path)`, the default a user gets (float32, eager)
  trillion-auto               `trillion.LLM(path, compile="auto")`: eager from the first token, the
                              decode step compiling in the background (not in the default list)
  trillion-warm               the same again: inductor's on-disk cache now holds the first run's graphs
  trillion-eager              `trillion.LLM(path, compile=False)`
  trillion-compile            `trillion.LLM(path, compile=True)`: everything compiled before use
  trillion-int8               `trillion.LLM(int8_path)`, the int8 scheme, default engine (compare with q8_0)
  trillion-int8-compile       (not in the default list)

Unless --keep-cache, the workers share a fresh TORCHINDUCTOR_CACHE_DIR in the work folder, so the
first compiling engine starts cold and `trillion-warm` shows a second start on the same machine.

Each worker measures greedy batch-1 decode tokens/s (a --prompt-len prompt, --new-tokens tokens,
timed after the first), prefill tokens/s of a --prefill-len prompt (its time to first token, after
one untimed run of the same length), start-up (process start -> first token of the first request:
imports, load, compilation if any), when the compiled decode step is ready (compile="auto": after
the first token, in the background), and its peak RSS; decode and prefill are the median of --repeats.
The roofline share is bytes of weights read per decoded token (every tensor, the routed experts
times top-k / experts, one embedding row; each engine's own storage) x tokens/s / the measured read
bandwidth. Prints a markdown table. On a shared machine the figures are indicative only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENGINES = ("llama-f32", "llama-q8_0", "trillion", "trillion-compile", "trillion-int8")
COMPILE = {"trillion-eager": "false", "trillion-compile": "true", "trillion-int8-compile": "true",
           "trillion-auto": "auto", "trillion-warm": "auto"}  # else "default": what LLM(path) does


# ---------------------------------------------------------------------- bytes per decoded token


def trillion_active_bytes(model) -> int:
    """Bytes of the main model's tensors a decode step reads (routed experts: k of E; embedding: a row)."""
    cfg = model.cfg
    total = 0
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if name.startswith("mtp.") or name.endswith("tid2eid") or t.numel() == 0:
            continue
        b = t.numel() * t.element_size()
        if ".ffn.experts." in name:
            b = b * cfg.n_activated_experts / cfg.n_routed_experts
        elif name == "embed.weight":
            b = b / cfg.vocab_size
        total += b
    return int(total)


def gguf_active_bytes(path: Path, top_k: int, n_experts: int, vocab: int) -> int:
    import gguf

    total = 0
    for t in gguf.GGUFReader(path).tensors:
        b = int(t.n_bytes)
        if "_exps." in t.name:
            b = b * top_k / n_experts
        elif t.name == "token_embd.weight":
            b = b / vocab
        elif t.name.endswith("tid2eid.weight"):
            continue
        total += b
    return int(total)


# ---------------------------------------------------------------------- workers (one per process)


def worker(args) -> dict:
    prompt = json.loads(args.prompt)
    long_prompt = json.loads(args.long_prompt)
    if args.worker == "llama":
        first, run = llama_runner(args)
    else:
        first, run = trillion_runner(args)
    first(prompt)
    startup = time.time() - args.spawn_time
    ready = None
    if args.worker == "trillion" and args.compile == "auto":
        run.runner.wait_compiled()  # the decode step's graph, compiling since start-up
        ready = time.time() - args.spawn_time
    t = time.perf_counter()
    run(prompt, 4)  # warm-up: the decode step (compiled when asked)
    run(long_prompt, 1)  # warm-up of the long prompt's prefill shapes
    warm = time.perf_counter() - t
    decode, prefill = [], []
    for _ in range(args.repeats):
        ttft, total = run(prompt, args.new_tokens)
        decode.append((args.new_tokens - 1) / (total - ttft))
        ttft, _ = run(long_prompt, 1)
        prefill.append(len(long_prompt) / ttft)
    return {
        "decode": statistics.median(decode),
        "prefill": statistics.median(prefill),
        "startup": startup,
        "ready": ready,
        "warmup": warm,
        "rss_mb": peak_rss_mb(),
    }


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: ru_maxrss would include the parent's, kept across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def llama_runner(args):
    import numpy as np
    from llama_cpp import Llama, llama_cpp

    if not args.llama_extra_buffers:
        # llama-cpp-python has no argument for it. On x86 the only extra buffer for Q8_0 weights is
        # AMX's, and on AMX CPUs llama.cpp (0.3.36) crashes on a deepseek4 Q8_0 graph with it
        # (tests/gguf_export/test_llamacpp.py); F32 weights never use one.
        default = llama_cpp.llama_model_default_params

        def params():
            p = default()
            p.use_extra_bufts = False
            return p

        llama_cpp.llama_model_default_params = params
    llm = Llama(
        model_path=args.path,
        n_ctx=args.n_ctx,
        n_batch=512,
        n_ubatch=512,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
    )
    n_vocab = llm.n_vocab()

    def next_token() -> int:
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
        return int(logits.argmax())

    def run(prompt, n_new):
        llm.reset()
        llm._ctx.kv_cache_clear()
        t = time.perf_counter()
        llm.eval(prompt)
        tok = next_token()
        ttft = time.perf_counter() - t
        for _ in range(n_new - 1):
            llm.eval([tok])
            tok = next_token()
        return ttft, time.perf_counter() - t

    return (lambda p: run(p, 1)), run


def trillion_runner(args):
    import torch

    torch.set_num_threads(args.threads)
    from trillion import LLM, SamplingParams

    options = {} if args.compile == "default" else {"compile": {"auto": "auto", "true": True, "false": False}[args.compile]}
    llm = LLM(args.path, max_model_len=args.n_ctx, **options)

    def run(prompt, n_new):
        params = SamplingParams(temperature=0, max_new_tokens=n_new, ignore_eos=True)
        s = llm.generate([prompt], params)[0].stats
        return s["time_to_first_token_s"], s["total_time_s"]

    run.runner = llm.engine.runner
    return (lambda p: run(p, 1)), run


def spawn(engine: str, path: Path, args, prompt, long_prompt) -> dict:
    kind = "llama" if engine.startswith("llama") else "trillion"
    cmd = [sys.executable, __file__, "--worker", kind, "--path", str(path), "--threads", str(args.threads),
           "--new-tokens", str(args.new_tokens), "--repeats", str(args.repeats), "--n-ctx", str(args.n_ctx),
           "--prompt", json.dumps(prompt), "--long-prompt", json.dumps(long_prompt)]
    if kind == "trillion":
        cmd += ["--compile", COMPILE.get(engine, "default")]
    if args.llama_extra_buffers:
        cmd.append("--llama-extra-buffers")
    cmd += ["--spawn-time", repr(time.time())]
    env = dict(os.environ)
    if args.cache_dir:
        env["TORCHINDUCTOR_CACHE_DIR"] = str(args.cache_dir)
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if out.returncode:
        raise RuntimeError(f"{engine} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------- main


def build(args, work: Path) -> dict[str, Path]:
    """The checkpoints and GGUF files of the flavor's seeded random weights, in `work`."""
    from trillion.checkpoint import load_model, save_model
    from trillion.gguf import export_gguf
    from trillion.quant import get_scheme, quantize_model

    model = load_model(args.flavor, seed=args.seed)
    paths = {"trillion": work / "f32", "trillion-int8": work / "int8",
             "llama-f32": work / "f32.gguf", "llama-q8_0": work / "q8_0.gguf"}
    save_model(model, paths["trillion"])
    export_gguf(model, paths["llama-f32"], type="f32", overwrite=True)
    export_gguf(model, paths["llama-q8_0"], type="q8_0", overwrite=True)
    int8 = quantize_model(model, get_scheme("int8", head="int8"), inplace=False)
    save_model(int8, paths["trillion-int8"])
    for e in ("trillion-auto", "trillion-warm", "trillion-eager", "trillion-compile"):
        paths[e] = paths["trillion"]
    paths["trillion-int8-compile"] = paths["trillion-int8"]
    args.active = {
        "trillion": trillion_active_bytes(model),
        "trillion-int8": trillion_active_bytes(int8),
    }
    cfg = model.cfg
    for e in ("llama-f32", "llama-q8_0"):
        args.active[e] = gguf_active_bytes(paths[e], cfg.n_activated_experts, cfg.n_routed_experts, cfg.vocab_size)
    for e in ("trillion-auto", "trillion-warm", "trillion-eager", "trillion-compile"):
        args.active[e] = args.active["trillion"]
    args.active["trillion-int8-compile"] = args.active["trillion-int8"]
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flavor", default="bench-94m")
    ap.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated, from {ENGINES} and trillion-auto, trillion-warm, trillion-eager, trillion-int8-compile")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prefill-len", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-ctx", type=int, default=1024, help="context of each engine (>= prefill-len + 1)")
    ap.add_argument("--llama-extra-buffers", action="store_true",
                    help="let llama.cpp repack weights into its extra buffers (AMX): off, it crashes on AMX CPUs")
    ap.add_argument("--workdir", default=None, help="where the weights go (default: a temporary folder)")
    ap.add_argument("--keep-cache", action="store_true",
                    help="use the environment's inductor cache (default: a fresh one in the work folder)")
    # worker mode (internal)
    ap.add_argument("--worker", choices=("llama", "trillion"), help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    ap.add_argument("--compile", default="default", choices=("default", "auto", "true", "false"), help=argparse.SUPPRESS)
    ap.add_argument("--prompt", help=argparse.SUPPRESS)
    ap.add_argument("--long-prompt", help=argparse.SUPPRESS)
    ap.add_argument("--spawn-time", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    import torch

    from trillion.flavors import get_flavor
    from trillion.params import count_params
    from trillion.plan.hardware import cpu_name, measure_bandwidth

    cfg = get_flavor(args.flavor)
    report = count_params(cfg)
    torch.set_num_threads(args.threads)
    bw = measure_bandwidth() / 1e9
    print(f"{cpu_name()}, {args.threads} threads, read bandwidth {bw:.1f} GB/s, torch {torch.__version__}")
    print(f"{args.flavor}: {report.total / 1e6:.1f}M parameters, {report.active / 1e6:.1f}M active per token; "
          f"prompt {args.prompt_len}, {args.new_tokens} greedy tokens, prefill {args.prefill_len}")
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(2, cfg.vocab_size, (args.prompt_len,), generator=g).tolist()
    long_prompt = torch.randint(2, cfg.vocab_size, (args.prefill_len,), generator=g).tolist()

    with tempfile.TemporaryDirectory(prefix="llamacpp-bench-") as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        args.cache_dir = None if args.keep_cache else Path(tempfile.mkdtemp(prefix="inductor-", dir=work))
        paths = build(args, work)
        rows = {}
        for e in engines:
            print(f"  running {e} ...", file=sys.stderr, flush=True)
            rows[e] = spawn(e, paths[e], args, prompt, long_prompt)
            print(f"  {e}: {rows[e]}", file=sys.stderr, flush=True)

    base = {e: rows.get("llama-q8_0" if "int8" in e else "llama-f32") for e in rows}
    print()
    print("| engine | decode tok/s (batch 1) | vs llama.cpp | prefill 512 tok/s | start-up to 1st token | "
          "compiled decode ready | warm-up after | peak RSS | bytes/token | roofline share |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for e, r in rows.items():
        ref = base[e]
        vs = f"{r['decode'] / ref['decode']:.2f}x" if ref and not e.startswith("llama") else "-"
        share = args.active[e] * r["decode"] / (bw * 1e9)
        ready = "-" if r.get("ready") is None or COMPILE.get(e, "default") != "auto" else f"{r['ready']:.0f} s"
        print(f"| {e} | {r['decode']:.0f} | {vs} | {r['prefill']:,.0f} | {r['startup']:.1f} s | {ready} "
              f"| {r['warmup']:.1f} s "
              f"| {r['rss_mb']:,.0f} MB | {args.active[e] / 1e6:.1f} MB | {100 * share:.0f}% |")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
