"""Every quantisation scheme against float32 on the same seeded V4 weights, in one run.

    python benchmarks/quant_bench.py --threads 1                          # small and bench-1b
    python benchmarks/quant_bench.py --flavors small --schemes int8,int4 --new-tokens 16

For each flavor: builds the model with seeded random weights (float32), then for float32, bfloat16
(a reference point: what plain bf16 costs in accuracy) and each scheme measures on this machine:
bytes on disk (the checkpoint `save_model` writes; float32 and bf16 as the hf layout) and in memory
(parameters + buffers), the logit error against float32 over a fixed token set (max / mean |diff|,
top-1 agreement, mean KL(p_f32 || p_q) per position), prefill tokens/s of the prompt (its time to
first token) and greedy decode tokens/s at batch 1 (`trillion.LLM(model, max_seqs=2)`, timed after
the first token); the median of --repeats runs. `--head int8` quantises the output head as well.
Each model's runs alternate with float32's, and "vs float32" is the median of the paired ratios,
because a shared machine's load drifts; float32's own row is the median of all its runs. Schemes
whose blocks do not fit a flavor's widths are skipped with a note. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from trillion.checkpoint import save_model
from trillion.engine import LLM, SamplingParams
from trillion.flavors import get_flavor
from trillion.model import Transformer
from trillion.model.dtypes import cast_model
from trillion.model.init import init_weights
from trillion.quant import fixed_tokens, get_scheme, logit_error, model_nbytes, quantize_model

DEFAULT_SCHEMES = "v4-release,fp8-block,mxfp8,hif8,int8,int4,int4-g32"


class Decoder:
    """Greedy batch-1 decoding of one model through the engine; `tps()` is one timed generation."""

    def __init__(self, model, prompt: list[int], args):
        self.llm = LLM(model, max_seqs=2, max_model_len=args.max_model_len, compile=args.compile)
        self.prompt, self.new_tokens = prompt, args.new_tokens
        self.llm.generate(
            [prompt], SamplingParams(temperature=0, max_new_tokens=3, ignore_eos=True)
        )  # warm-up (with compile=True: compiles the prompt's prefill shapes and the decode step)

    def tps(self) -> tuple[float, float]:
        """(prefill, decode) tokens/s of one generation."""
        params = SamplingParams(temperature=0, max_new_tokens=self.new_tokens, ignore_eos=True)
        s = self.llm.generate([self.prompt], params)[0].stats
        ttft = s["time_to_first_token_s"]
        return len(self.prompt) / ttft, (self.new_tokens - 1) / (s["total_time_s"] - ttft)


def disk_bytes(model, **save) -> int:
    folder = Path(tempfile.mkdtemp(prefix="quant-bench-"))
    try:
        save_model(model, folder / "ckpt", **save)
        return sum(f.stat().st_size for f in (folder / "ckpt").glob("*.safetensors"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@torch.no_grad()
def measure(name, model, tokens, ref, prompt, args, save, f32: Decoder | None = None) -> dict:
    """One row. Decoding alternates with the float model's (`f32`), `--repeats` times: "vs float32" is
    the median of the paired ratios, so that a shared machine's drifting load cancels out."""
    t = time.perf_counter()
    logits = model(tokens)
    row = dict(
        scheme=name, disk=disk_bytes(model, **save), memory=model_nbytes(model), **logit_error(ref, logits)
    )
    dec = f32 if name == "float32" else Decoder(model, prompt, args)
    runs, f32_runs = [], []  # (prefill, decode) pairs
    for _ in range(args.repeats):
        if dec is not f32:
            f32_runs.append(f32.tps())
        runs.append(dec.tps())
    for i, what in enumerate(("prefill", "decode")):
        row[what] = statistics.median(r[i] for r in runs)
        row[what + "_ratio"] = (
            statistics.median(r[i] / f[i] for r, f in zip(runs, f32_runs)) if f32_runs else 1.0
        )
    row["f32_runs"] = f32_runs if dec is not f32 else runs
    row["seconds"] = time.perf_counter() - t
    print(row, file=sys.stderr, flush=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flavors", default="small,bench-1b")
    ap.add_argument("--schemes", default=DEFAULT_SCHEMES)
    ap.add_argument("--eval-seqs", type=int, default=4, help="sequences of the fixed token set")
    ap.add_argument("--eval-len", type=int, default=128, help="tokens per sequence of the fixed token set")
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--max-model-len", type=int, default=1024, help="engine context (sizes its page tables)")
    ap.add_argument(
        "--repeats", type=int, default=3, help="timed generations per model, alternating with float32"
    )
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--compile", action="store_true", help="decode with LLM(compile=True) (warm-up not timed)"
    )
    ap.add_argument("--head", default=None, help="also quantise the output head with this format (e.g. int8)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, load average "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min), torch {torch.__version__}"
    )
    tables = []
    for flavor in args.flavors.split(","):
        cfg = get_flavor(flavor)
        model = init_weights(Transformer(cfg), seed=0).eval()
        tokens = fixed_tokens(cfg.vocab_size, args.eval_seqs, args.eval_len, seed=0)
        prompt = fixed_tokens(cfg.vocab_size, 1, args.prompt_len, seed=1)[0].tolist()
        with torch.no_grad():
            ref = model(tokens)
        f32 = Decoder(model, prompt, args)
        rows = [measure("float32", model, tokens, ref, prompt, args, {"layout": "hf"}, f32=f32)]
        bf16 = cast_model(init_weights(Transformer(cfg), seed=0).eval(), torch.bfloat16)  # fp32 head, router
        rows.append(measure("bfloat16", bf16, tokens, ref, prompt, args, {"layout": "hf"}, f32=f32))
        del bf16
        for scheme in args.schemes.split(","):
            try:
                chosen = get_scheme(scheme, head=args.head) if args.head else scheme
                q = quantize_model(model, chosen, inplace=False)
            except ValueError as e:  # a scheme whose blocks do not fit this flavor's widths
                print(f"{flavor} {scheme}: skipped: {str(e).splitlines()[1].strip()}", file=sys.stderr)
                continue
            name = f"{scheme} + {args.head} head" if args.head else scheme
            rows.append(measure(name, q, tokens, ref, prompt, args, {}, f32=f32))
            del q
            gc.collect()
        # float32's own speed: the median of all its runs
        for i, what in enumerate(("prefill", "decode")):
            rows[0][what] = statistics.median([t[i] for r in rows for t in r["f32_runs"]])
        tables.append((flavor, rows))
        del model
        gc.collect()

    print()
    print(table(tables))
    return 0


def table(tables: list[tuple[str, list[dict]]]) -> str:
    """The markdown table of (flavor, rows) pairs."""
    lines = [
        (
            "| flavor | scheme | disk | memory | max abs logit err | mean abs | top-1 agree | KL (nats) | "
            "prefill tok/s | vs float32 | decode tok/s | float32 tok/s, same pairs | vs float32 |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for flavor, rows in tables:
        for r in rows:
            exact = r["scheme"] == "float32"
            cells = [
                flavor,
                r["scheme"],
                _mb(r["disk"]),
                _mb(r["memory"]),
                "0" if exact else f"{r['max_abs']:.3g}",
                "0" if exact else f"{r['mean_abs']:.3g}",
                f"{100 * r['top1']:.1f}%",
                "0" if exact else f"{r['kl']:.2e}",
                f"{r['prefill']:.0f}",
                f"{r['prefill_ratio']:.2f}x",
                f"{r['decode']:.1f}",
                "" if exact else f"{statistics.median(t[1] for t in r['f32_runs']):.1f}",
                f"{r['decode_ratio']:.2f}x",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


if __name__ == "__main__":
    sys.exit(main())
