"""Peak memory of loading a checkpoint, against the model's own size in its compute dtype.

    python benchmarks/load_memory.py                          # bench-1b, bf16, hf layout
    python benchmarks/load_memory.py --flavor small --compare-transformers
    python benchmarks/load_memory.py --flavor small --layout deepseek   # FP8/FP4 dequantised on load

Steps: build the flavor's seeded random model, save it with `save_model`, then load it in a fresh
Python process (so nothing is shared with the writer) and read the peak RSS there (VmHWM, or
`resource.getrusage(...).ru_maxrss` off Linux) after `load_model` and
after touching every weight once (a memory-mapped load pages weights in on first use, so the
after-load figure alone would flatter it), against the resident size right after the imports
(baseline; the peak count is restarted there through /proc/self/clear_refs where Linux allows).
`--compare-transformers` repeats the load with `AutoModelForCausalLM.from_pretrained` (transformers
keeps no MTP block, so its model is smaller).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def peak_rss() -> int:
    """Peak resident set size of this process so far, in bytes.

    Linux: VmHWM, which /proc/self/clear_refs can restart. ru_maxrss is the fallback, but on Linux it
    also keeps the peak from before exec, i.e. the forking parent's, which would swamp a child's.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib if sys.platform == "darwin" else kib * 1024


def current_rss() -> int:
    """Resident set size now, in bytes (Linux /proc; elsewhere the peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except OSError:
        return peak_rss()


def reset_peak() -> None:
    """Restart the peak-RSS count here, so import-time transients do not hide the load (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def state_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


@torch.no_grad()
def touch(model: torch.nn.Module) -> None:
    for t in model.state_dict().values():
        t.sum()


def child(loader: str, path: str, dtype: str) -> dict:
    """Runs in the fresh process: load, touch, report."""
    torch_dtype = getattr(torch, dtype)
    if loader == "transformers":
        from transformers import AutoModelForCausalLM

        import trillion  # noqa: F401  (same imports on both sides, for a fair baseline)
    else:
        from trillion import load_model
    reset_peak()
    base = current_rss()
    t0 = time.perf_counter()
    if loader == "transformers":
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    else:
        model = load_model(path, dtype=torch_dtype)
    seconds = time.perf_counter() - t0
    after_load = peak_rss()
    touch(model)
    return {
        "loader": loader,
        "seconds": seconds,
        "baseline": base,
        "after_load": after_load,
        "after_touch": peak_rss(),
        "model_bytes": state_bytes(model),
    }


def run_child(loader: str, path: Path, dtype: str) -> dict:
    cmd = [sys.executable, __file__, "--child", loader, str(path), "--dtype", dtype]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def gb(n: int) -> str:
    return f"{n / 1e9:7.3f} GB"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--flavor", default="bench-1b", help="flavor from trillion.flavors (default bench-1b)")
    dtypes = ("float32", "bfloat16")
    p.add_argument("--dtype", default="bfloat16", choices=dtypes, help="compute dtype of the load")
    p.add_argument("--save-dtype", choices=dtypes, help="hf storage dtype (default: --dtype)")
    p.add_argument("--layout", default="hf", choices=("hf", "deepseek"))
    p.add_argument("--dir", help="where to write the checkpoint (default: a temporary folder)")
    p.add_argument("--compare-transformers", action="store_true", help="also load with transformers")
    p.add_argument("--child", nargs=2, metavar=("LOADER", "PATH"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.dtype)))
        return

    from trillion import load_model, save_model

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / args.flavor
        t0 = time.perf_counter()
        model = load_model(args.flavor, dtype=torch.float32)
        save_dtype = None if args.layout == "deepseek" else (args.save_dtype or args.dtype)
        save_model(model, path, layout=args.layout, dtype=save_dtype)
        del model
        size = sum(f.stat().st_size for f in path.glob("*.safetensors"))
        print(f"{args.flavor}: wrote {args.layout} checkpoint ({gb(size).strip()} on disk) in "
              f"{time.perf_counter() - t0:.1f} s; loading as {args.dtype} in a fresh process")
        rows = [run_child("trillion", path, args.dtype)]
        if args.compare_transformers:
            if args.layout != "hf":
                print("transformers reads the hf layout only; skipping --compare-transformers")
            else:
                rows.append(run_child("transformers", path, args.dtype))

    print(f"{'loader':<13} {'model':>10} {'baseline':>10} {'peak@load':>10} {'peak@touch':>10} "
          f"{'extra/model':>11} {'seconds':>8}")
    for r in rows:
        extra = (r["after_touch"] - r["baseline"]) / r["model_bytes"]
        print(f"{r['loader']:<13} {gb(r['model_bytes'])} {gb(r['baseline'])} {gb(r['after_load'])} "
              f"{gb(r['after_touch'])} {extra:10.2f}x {r['seconds']:8.2f}")
    print("extra/model = (peak after touching every weight - baseline) / model bytes in the compute dtype; "
          "1.00x is the floor")


if __name__ == "__main__":
    main()
