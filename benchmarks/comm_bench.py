"""Bytes the parallel model sends per decoded token, counted in the collectives, against the formula.

    python benchmarks/comm_bench.py              # the formula for v4-flash / v4-pro at 8, 16, 64 ranks
    python benchmarks/comm_bench.py --measure    # + count a decode step on this CPU (gloo, 2 and 4 processes)

The formula (docs/distributed.md), per MoE layer of one decode step in which each of the dp groups
decodes B tokens, summed over all ranks, with D dim, b bytes per activation, E experts, k experts
per token, world = ep = dp x tp, and uniform routing (a pair leaves its rank with probability
(ep - 1) / ep):
  attention all-reduce  dp * 2 (tp - 1) * B * D * b
  expert counts         (ep - 1) * E * 8
  dispatch              dp * B * k * (ep - 1) / ep * (D * b + 4)       (activations + routing weight)
  combine               dp * B * k * (ep - 1) / ep * D * b
  tp gather             dp * tp * (tp - 1) * ceil(B / tp) * D * 4      (float32 rows; for B <= tp / 2
                        an all-reduce instead: dp * 2 (tp - 1) * B * D * 4)
and once per step (not per layer): embedding all-reduce dp * 2 (tp - 1) * B * D * b, logits gather
dp * tp * (tp - 1) * ceil(V / tp) * B * 4. Each rank sends its share over its own link; the time
printed is an even share of a step's bytes over one link (routing skew makes the busiest rank slower;
latency per message and overlap with compute are not modelled).

--measure runs one forward of one token per sequence (B sequences per dp group) on a parallelised
bench-94m, counts every collective (trillion.parallel.counting) and checks the count against the
formula evaluated with that step's own routing (how many pairs actually left their rank).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys

# link bandwidths from shared/reference/formats-and-hardware.md (GB/s per chip)
LINKS = {"H800 NVLink": 400, "H100/H200 NVLink": 900, "B200 NVLink": 1800, "Ascend 950": 2000}


def per_layer(cfg, dp: int, tp: int, b_tokens: int, act_bytes: int = 2, off_pairs: float | None = None) -> dict:
    """Bytes all ranks send for one MoE layer of a step (see the module docstring). off_pairs: pairs
    that left their rank this step (None: the uniform-routing expectation)."""
    ep, d, e, k = dp * tp, cfg.dim, cfg.n_routed_experts, cfg.n_activated_experts
    off = dp * b_tokens * k * (ep - 1) / ep if off_pairs is None else off_pairs
    return {
        "attn": dp * 2 * (tp - 1) * b_tokens * d * act_bytes,
        "counts": (ep - 1) * e * 8,
        "dispatch": off * (d * act_bytes + 4),
        "combine": off * d * act_bytes,
        "gather": dp * gather_rows(tp, b_tokens) * d * 4,
    }


def gather_rows(tp: int, n: int) -> int:
    """Rows all tp ranks send to give each the n float32 output rows (experts.py step 5): a ring
    all-gather of shares padded to ceil(n / tp), or an all-reduce when that is cheaper."""
    if tp == 1 or n == 0:
        return 0
    padded = tp * math.ceil(n / tp)
    return 2 * (tp - 1) * n if 2 * n <= padded else tp * (tp - 1) * math.ceil(n / tp)


def per_step(cfg, dp: int, tp: int, b_tokens: int, act_bytes: int = 2) -> dict:
    """Bytes all ranks send once per step: the embedding's all-reduce and the logits' all-gather."""
    return {
        "embed": dp * 2 * (tp - 1) * b_tokens * cfg.dim * act_bytes,
        "head": dp * tp * (tp - 1) * math.ceil(cfg.vocab_size / tp) * b_tokens * 4,
    }


def kb(n: float) -> str:
    return f"{n / 1e3:9.1f}"


def analytic() -> None:
    from trillion.flavors import FLAVORS

    print("Formula: bf16 activations, uniform routing; each dp group decodes B sequences, one token each, per")
    print("step. KB/token = all ranks' bytes / the step's dp * B tokens. us/step = one rank's even share of the")
    print("step's bytes (every layer, the embedding, the logits) over its link: the communication each")
    print("sequence's next token waits for, before per-message latency, routing skew and overlap with compute.")
    names = "".join(f"{n:>17}" for n in LINKS)
    for name in ("v4-flash", "v4-pro"):
        cfg = FLAVORS[name]
        print(f"\n{name}: D={cfg.dim}, E={cfg.n_routed_experts}, k={cfg.n_activated_experts}, "
              f"V={cfg.vocab_size}, {cfg.n_layers} layers")
        print(f"{'ranks':>5} {'dp':>3} {'tp':>3} {'B':>3} {'seqs':>5} {'KB/token/layer':>15} {'KB/token/step':>14} |"
              f"{'us/step at:':>12}{names}")
        for world in (8, 16, 64):
            for tp in (1, 8):
                dp = world // tp
                for b in (1, 32):
                    layer = sum(per_layer(cfg, dp, tp, b).values())
                    step = layer * cfg.n_layers + sum(per_step(cfg, dp, tp, b).values())
                    tokens = dp * b
                    times = "".join(f"{step / world / (bw * 1e9) * 1e6:17.1f}" for bw in LINKS.values())
                    print(f"{world:>5} {dp:>3} {tp:>3} {b:>3} {tokens:>5} {kb(layer / tokens):>15} "
                          f"{kb(step / tokens):>14} |{'':>12}{times}")


# ------------------------------------------------------------------------------------ measure


def child(b_tokens: int, dp: int, tp: int) -> None:
    """One rank: parallelise bench-94m, count one decode-sized forward, report counts and routing."""
    import torch

    from trillion import parallel
    from trillion.checkpoint import load_model
    from trillion.parallel.shards import split_range

    torch.set_num_threads(1)
    cfg = load_model("bench-94m", device="meta").cfg
    mesh = parallel.init_mesh(dp, tp, cfg=cfg, device_type="cpu")
    model = parallel.parallelize(load_model("bench-94m", dtype=torch.bfloat16), mesh)
    group = mesh.get_local_rank("dp")
    ids = torch.randint(0, cfg.vocab_size, (dp * b_tokens, 1), generator=torch.Generator().manual_seed(5))
    ids = ids[group * b_tokens : (group + 1) * b_tokens]
    routes = []
    for blk in model.layers:
        blk.ffn.gate.register_forward_hook(lambda m, args, out: routes.append(out[1]))
    with torch.no_grad():
        model(ids)  # warm up
        routes.clear()
        with parallel.counting() as traffic:
            model(ids)
    p = model.placement
    per_rank = cfg.n_routed_experts // p.ep
    off = 0  # pairs of this rank's share whose expert lives on another rank
    for idx in routes:
        lo, hi = split_range(idx.shape[0], p.tp, p.tp_rank)
        off += int((idx[lo:hi] // per_rank != p.ep_rank).sum())
    by_tag = {}
    for _op, tag, _p, sent in traffic.calls:
        by_tag[tag] = by_tag.get(tag, 0) + sent
    print(json.dumps({"by_tag": by_tag, "off": off}))
    parallel.shutdown()


def measure(b_tokens: int) -> None:
    import torch  # noqa: F401

    from trillion.checkpoint import load_model

    cfg = load_model("bench-94m", device="meta").cfg
    print(f"\nCounted on this CPU: bench-94m (D={cfg.dim}, E={cfg.n_routed_experts}, k={cfg.n_activated_experts}, "
          f"V={cfg.vocab_size}, {cfg.n_layers} layers), bf16, one token for each of B={b_tokens} sequences per dp group")
    print(f"{'dp':>3} {'tp':>3} | {'tag':<9} {'counted B':>11} {'formula(routing) B':>19} {'formula(uniform) B':>19}")
    for dp, tp in ((2, 1), (1, 2), (4, 1), (2, 2)):
        rows = launch(dp, tp, b_tokens)
        counted: dict[str, int] = {}
        for r in rows:
            for tag, n in r["by_tag"].items():
                counted[tag] = counted.get(tag, 0) + n
        off = sum(r["off"] for r in rows) / cfg.n_layers  # pairs that left their rank, per layer
        exact = {t: v * cfg.n_layers for t, v in per_layer(cfg, dp, tp, b_tokens, off_pairs=off).items()}
        uniform = {t: v * cfg.n_layers for t, v in per_layer(cfg, dp, tp, b_tokens).items()}
        exact.update(per_step(cfg, dp, tp, b_tokens))
        uniform.update(per_step(cfg, dp, tp, b_tokens))
        for tag, want in exact.items():
            if want or counted.get(tag):
                ok = "" if counted.get(tag, 0) == round(want) else "   MISMATCH"
                print(f"{dp:>3} {tp:>3} | {tag:<9} {counted.get(tag, 0):>11} {round(want):>19} "
                      f"{round(uniform[tag]):>19}{ok}")
        total = sum(counted.values())
        layers = total - counted.get("embed", 0) - counted.get("head", 0)
        print(f"{dp:>3} {tp:>3} | {'total':<9} {total:>11}   per token per layer (without embedding and logits): "
              f"{layers / (dp * b_tokens) / cfg.n_layers / 1e3:.2f} KB")


def launch(dp: int, tp: int, b_tokens: int) -> list[dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(dp * tp):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(dp * tp),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, __file__, "--child", str(b_tokens), str(dp), str(tp)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True))
    rows = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode:
            raise SystemExit(f"a rank failed (exit {p.returncode})")
        rows.append(json.loads(out.strip().splitlines()[-1]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--measure", action="store_true", help="also count a decode step on this CPU")
    ap.add_argument("--batch", type=int, default=3, help="sequences per dp group in --measure (default 3)")
    ap.add_argument("--child", nargs=3, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    analytic()
    if args.measure:
        measure(args.batch)


if __name__ == "__main__":
    main()
