"""Peak memory of loading a checkpoint, against the model's own size in its compute dtype.

    python benchmarks/load_memory.py                          # bench-1b, bf16, hf layout
    python benchmarks/load_memory.py --flavor small --compare-transformers
    python benchmarks/load_memory.py --flavor small --layout deepseek   # FP8/FP4 dequantised on load
    python benchmarks/load_memory.py --ranks 4 --tp 2                   # sharded: each of 4 processes
    python benchmarks/load_memory.py --ranks 2 --layout deepseek --quantize v4-release

Steps: build the flavor's seeded random model, save it with `save_model`, then load it in a fresh
Python process (so nothing is shared with the writer) and read the peak RSS there (VmHWM, or
`resource.getrusage(...).ru_maxrss` off Linux) after `load_model` and
after touching every weight once (a memory-mapped load pages weights in on first use, so the
after-load figure alone would flatter it), against the resident size right after the imports
(baseline, taken after torch's one-time import of its meta-tensor kernels; the peak count is restarted
there through /proc/self/clear_refs where Linux allows).
`--compare-transformers` repeats the load with `AutoModelForCausalLM.from_pretrained` (transformers
keeps no MTP block, so its model is smaller).

`--ranks N` loads with `trillion.parallel.load_sharded` in N processes started like torchrun (gloo, a
dp x tp mesh, tp from `--tp`): each rank's peak is measured the same way against its own part of the
model (its state_dict bytes), the baseline taken after the process group is up.
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

from trillion.plan.hardware import cpu_name


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
        (t.view(torch.uint8) if t.element_size() == 1 else t).sum()  # FP8 codes have no sum


def warm_meta() -> None:
    """The first operation on a `meta` tensor imports torch's meta kernels (~75 MB of code, once per
    process, whatever the model's size): do it before the baseline, so the figures are the model's."""
    (torch.empty(1, device="meta") + 1).sum()


def child(loader: str, path: str, dtype: str) -> dict:
    """Runs in the fresh process: load, touch, report."""
    torch_dtype = getattr(torch, dtype)
    if loader == "transformers":
        from transformers import AutoModelForCausalLM

        import trillion  # noqa: F401  (same imports on both sides, for a fair baseline)
    else:
        from trillion import load_model
    warm_meta()
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


def sharded_child(path: str, dtype: str, tp: int, quantize: str | None) -> dict:
    """Runs in each of the --ranks processes: join the mesh, load this rank's part, touch, report."""
    import os

    from trillion import parallel

    world = int(os.environ["WORLD_SIZE"])
    mesh = parallel.init_mesh(world // tp, tp, device_type="cpu")
    warm_meta()
    reset_peak()
    base = current_rss()
    t0 = time.perf_counter()
    model = parallel.load_sharded(path, mesh, dtype=getattr(torch, dtype), quantize=quantize)
    seconds = time.perf_counter() - t0
    after_load = peak_rss()
    touch(model)
    sizes = [t.numel() * t.element_size() for t in model.state_dict().values()]
    out = {
        "loader": f"rank {os.environ['RANK']}/{world}",
        "seconds": seconds,
        "baseline": base,
        "after_load": after_load,
        "after_touch": peak_rss(),
        "model_bytes": state_bytes(model),
        "largest_tensor": max(sizes),
    }
    parallel.shutdown()
    return out


def run_sharded(path: Path, dtype: str, ranks: int, tp: int, quantize: str | None) -> list[dict]:
    import os
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = []
    for rank in range(ranks):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(ranks),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        cmd = [sys.executable, __file__, "--child", "sharded", str(path), "--dtype", dtype, "--tp", str(tp)]
        if quantize:
            cmd += ["--quantize", quantize]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True))
    rows = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode:
            raise SystemExit(f"a loading rank failed (exit {p.returncode})")
        rows.append(json.loads(out.strip().splitlines()[-1]))
    return rows


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
    p.add_argument("--ranks", type=int, default=0, help="load sharded over this many processes (gloo)")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel size of the --ranks mesh (dp = ranks / tp)")
    p.add_argument("--quantize", help="load_model's quantize (e.g. v4-release: keep the release's FP8/FP4)")
    p.add_argument("--child", nargs=2, metavar=("LOADER", "PATH"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        if args.child[0] == "sharded":
            print(json.dumps(sharded_child(args.child[1], args.dtype, args.tp, args.quantize)))
        else:
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
        if args.ranks:
            rows = run_sharded(path, args.dtype, args.ranks, args.tp, args.quantize)
        else:
            rows = [run_child("trillion", path, args.dtype)]
        if args.compare_transformers:
            if args.layout != "hf":
                print("transformers reads the hf layout only; skipping --compare-transformers")
            else:
                rows.append(run_child("transformers", path, args.dtype))

    print(f"CPU: {cpu_name()}")
    part = " (this rank's part)" if args.ranks else ""
    print(f"{'loader':<13} {'model' + part:>10} {'baseline':>10} {'peak@load':>10} {'peak@touch':>10} "
          f"{'extra/model':>11} {'seconds':>8}")
    for r in rows:
        extra = (r["after_touch"] - r["baseline"]) / r["model_bytes"]
        print(f"{r['loader']:<13} {gb(r['model_bytes'])} {gb(r['baseline'])} {gb(r['after_load'])} "
              f"{gb(r['after_touch'])} {extra:10.2f}x {r['seconds']:8.2f}")
    print("extra/model = (peak after touching every weight - baseline) / model bytes in the compute dtype; "
          "1.00x is the floor")
    if args.ranks:
        big = max(r["largest_tensor"] for r in rows)
        print(f"largest single tensor of a rank's part: {gb(big).strip()}; the bound is part + one tensor = "
              f"{max((r['model_bytes'] + r['largest_tensor']) / r['model_bytes'] for r in rows):.2f}x")


if __name__ == "__main__":
    main()
