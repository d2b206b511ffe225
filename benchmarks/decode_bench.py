"""Prefill and decode speed of trillion against transformers on the same V4 weights, same run.

    python benchmarks/decode_bench.py                       # bench-94m and bench-1b, float32
    python benchmarks/decode_bench.py --flavors bench-94m --new-tokens 64 --skip-transformers

For each flavor: builds the model with seeded random weights, saves it in the transformers
layout, loads it into transformers' DeepseekV4ForCausalLM as well, then measures on this machine:
prefill tokens/s (one prompt of --prompt-len tokens), decode tokens/s at batch 1 and 8 (greedy,
--new-tokens each, time after the first token), and the decode roofline: measured memory
bandwidth / bytes of weights a decode step reads per token (activated parameters at the compute
dtype). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

import torch

from trillion.checkpoint import save_model
from trillion.engine import LLM, SamplingParams
from trillion.flavors import get_flavor
from trillion.model import Transformer
from trillion.model.init import init_weights
from trillion.params import count_params
from trillion.plan.hardware import measure_bandwidth


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_trillion(model, prompts, new_tokens, batch, **engine) -> tuple[float, float]:
    llm = LLM(model, max_seqs=max(8, batch), **engine)
    greedy = SamplingParams(temperature=0, max_new_tokens=new_tokens, ignore_eos=True)
    # warm-up: with torch.compile, the first steps compile the graphs (reported, not timed)
    t = time.perf_counter()
    llm.generate(prompts[:batch], SamplingParams(temperature=0, max_new_tokens=4, ignore_eos=True))
    print(f"  trillion warm-up (batch {batch}, compile={engine.get('compile')}): {time.perf_counter() - t:.1f} s",
          file=sys.stderr)
    outs = llm.generate(prompts[:batch], greedy)
    first = max(o.stats["time_to_first_token_s"] for o in outs)
    total = max(o.stats["total_time_s"] for o in outs)
    decode = batch * (new_tokens - 1) / (total - first)
    prefill = sum(len(p) for p in prompts[:batch]) / first
    return prefill, decode


def bench_transformers(ref, prompts, new_tokens, batch) -> tuple[float, float]:
    ids = torch.tensor(prompts[:batch])
    gen = {"do_sample": False, "pad_token_id": 0, "eos_token_id": None}
    with torch.no_grad():
        ref.generate(ids[:, :16], max_new_tokens=4, **gen)  # warm-up
        t_first = timed(lambda: ref.generate(ids, max_new_tokens=1, min_new_tokens=1, **gen))
        t_all = timed(lambda: ref.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **gen))
    return ids.numel() / t_first, batch * (new_tokens - 1) / (t_all - t_first)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flavors", default="bench-94m,bench-1b")
    ap.add_argument("--prompt-len", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-transformers", action="store_true")
    ap.add_argument("--eager", action="store_true", help="trillion without torch.compile")
    ap.add_argument("--speculative", action="store_true", help="also measure MTP speculation (random weights!)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    bw = measure_bandwidth() / 1e9
    print(f"machine: {torch.get_num_threads()} threads, measured read bandwidth {bw:.1f} GB/s, torch {torch.__version__}")
    rows = []
    for name in args.flavors.split(","):
        cfg = get_flavor(name)
        model = init_weights(Transformer(cfg), seed=0).eval()
        active = count_params(cfg).active
        roofline = bw * 1e9 / (active * 4)
        g = torch.Generator().manual_seed(1)
        prompts = torch.randint(2, cfg.vocab_size, (8, args.prompt_len), generator=g).tolist()
        ref = None
        if not args.skip_transformers:
            from transformers import DeepseekV4ForCausalLM

            tmp = Path(tempfile.mkdtemp(prefix="trillion-bench-"))
            save_model(model, tmp)
            ref = DeepseekV4ForCausalLM.from_pretrained(str(tmp), dtype=torch.float32).eval()
        for batch in [int(b) for b in args.batches.split(",")]:
            p_ours, d_ours = bench_trillion(model, prompts, args.new_tokens, batch, compile=not args.eager)
            # the roofline is for one sequence: a batch of 8 touches more experts per step
            row = {"flavor": name, "batch": batch, "prefill": p_ours, "decode": d_ours, "roofline": roofline if batch == 1 else None}
            if ref is not None:
                row["hf_prefill"], row["hf_decode"] = bench_transformers(ref, prompts, args.new_tokens, batch)
            if args.speculative and batch == 1:
                _, row["decode_mtp"] = bench_trillion(model, prompts, args.new_tokens, batch, speculative="mtp",
                                                      compile=not args.eager)
            rows.append(row)
            print(row, file=sys.stderr)
        del model, ref
        gc.collect()
    print()
    print("| flavor | batch | trillion prefill tok/s | transformers prefill tok/s | trillion decode tok/s | "
          "transformers decode tok/s | decode speed-up | decode roofline tok/s | % of roofline |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        hp, hd = r.get("hf_prefill"), r.get("hf_decode")
        cells = [
            r["flavor"], str(r["batch"]), f"{r['prefill']:.0f}", f"{hp:.0f}" if hp else "-",
            f"{r['decode']:.1f}", f"{hd:.1f}" if hd else "-", f"{r['decode'] / hd:.1f}x" if hd else "-",
            f"{r['roofline']:.0f}" if r["roofline"] else "-",
            f"{100 * r['decode'] / r['roofline']:.0f}%" if r["roofline"] else "-",
        ]
        if "decode_mtp" in r:
            cells[4] += f" (MTP: {r['decode_mtp']:.1f})"
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
