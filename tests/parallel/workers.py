"""The worker side of the distributed tests: `python -m tests.parallel.workers SCENARIO OUT ...`,
started once per rank by launch.py. Each rank writes what it computed to OUT/<name>.rank<r>.safetensors;
the tests compare it with the single-process model."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch
from helpers import random_model
from safetensors.torch import save_file

from tests.parallel import cases
from trillion import parallel


def save(out: Path, name: str, tensors: dict[str, torch.Tensor]) -> None:
    rank = int(os.environ["RANK"])
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(out / f"{name}.rank{rank}.safetensors"))


@torch.no_grad()
def model_checks(out: Path, dp: int, tp: int, hf: str, official: str) -> None:
    """Every distributed computation the tests check, on one (dp, tp) mesh."""
    cfg = cases.config()
    mesh = parallel.init_mesh(dp, tp, cfg=cfg, device_type="cpu", grace=60)
    group = mesh.get_local_rank("dp")
    ids = cases.dp_part(cases.tokens(), dp, group)

    # 1. the full forward and the MTP logits
    model = parallel.parallelize(random_model(cfg), mesh)
    logits, hidden = model(ids, return_hidden=True)
    mtp = model.mtp_logits(hidden[:, :-1], ids[:, 1:])
    save(out, "forward", {"logits": logits, "mtp": mtp})

    # 2. uneven loads: one rank receives every pair; dp group 0 alone has tokens (the others join
    # idle), then one token per dp group (with tp = 2, one rank of the pair holds none)
    skewed = parallel.parallelize(cases.skew(random_model(cfg)), mesh)
    if group == 0:
        first = skewed(ids[:1, :11])
    else:
        parallel.join_idle(skewed, "main")
        first = torch.empty(0)
    single = skewed(ids[:1, :1])
    save(out, "skewed", {"first": first, "single": single})

    # 3. the engine's pieces: chunked prefill, a decode step (with the compiled graph's shapes,
    # run eagerly) and the MTP block through ModelRunner
    from trillion.engine.runner import ModelRunner
    from trillion.engine.state import StatePool

    pool = StatePool(cfg, max_seqs=ids.shape[0], page_size=4)
    seqs = [pool.allocate() for _ in range(ids.shape[0])]
    runner = ModelRunner(model, pool, max_model_len=64, static=True)
    t = ids.shape[1] - 1
    chunks = [runner.forward(ids[:, a:b], seqs) for a, b in ((0, 9), (9, t), (t, t + 1))]
    hidden = torch.cat([x for _, x in chunks], dim=1)
    mtp, _ = runner.mtp(hidden[:, :-1], ids[:, 1:], seqs)
    save(out, "engine", {"logits": torch.cat([lg for lg, _ in chunks], dim=1), "mtp": mtp})

    # 4. sharded loading: the hf layout, the release layout dequantised and kept quantised
    loaded = parallel.load_sharded(hf, mesh)
    save(out, "load_hf", loaded.state_dict())
    off_ids = cases.dp_part(cases.tokens(cases.official_config()), dp, group)
    for name, quantize in (("load_official", None), ("load_release", "v4-release")):
        loaded = parallel.load_sharded(official, mesh, quantize=quantize)
        save(out, name, {**loaded.state_dict(), "logits": loaded(off_ids)})
    parallel.shutdown()


@torch.no_grad()
def engine_checks(out: Path, dp: int, tp: int, speculative: str) -> None:
    """The distributed engine on one mesh: rank 0 generates (greedy, then seeded sampling with n = 2 and
    log-probabilities) for every prompt at once; it writes the tokens as JSON."""
    import json

    from trillion.engine import LLM, SamplingParams
    from trillion.parallel.engine import DistributedEngine

    cfg = cases.config()
    mesh = parallel.init_mesh(dp, tp, cfg=cfg, device_type="cpu", grace=60)
    model = parallel.parallelize(random_model(cfg), mesh)
    options = dict(cases.ENGINE, speculative=speculative or None, num_draft_tokens=2)
    engine = DistributedEngine(model, mesh, **options)
    with parallel.guard():
        if not engine.leader:
            engine.follow()
        else:
            llm = LLM(engine=engine)
            greedy = llm.generate(cases.prompts(), SamplingParams(max_new_tokens=9, temperature=0))
            sampled = llm.generate(cases.prompts()[:2], SamplingParams(max_new_tokens=6, n=2, seed=7, logprobs=2))
            result = {
                "greedy": [o.token_ids for o in greedy],
                "sampled": [[c.token_ids for c in o.outputs] for o in sampled],
                "logprobs": [[[e["logprob"] for e in c.logprobs] for c in o.outputs] for o in sampled],
            }
            engine.close()
            (out / "engine.json").write_text(json.dumps(result))
    parallel.shutdown()


def lost_rank(out: Path) -> None:
    """Rank 1 dies as the forward starts; the others, blocked in (or failing out of) a collective
    with it, must stop naming it. dp = world, tp = 1: every rank meets rank 1 in the expert exchange."""
    world = int(os.environ["WORLD_SIZE"])
    cfg = cases.config().replace(n_routed_experts=6)
    mesh = parallel.init_mesh(world, 1, cfg=cfg, device_type="cpu", grace=5, heartbeat=0.5)
    model = parallel.parallelize(random_model(cfg), mesh)
    rank = int(os.environ["RANK"])
    with parallel.guard():
        if rank == 1:
            os._exit(9)
        started = time.monotonic()
        with torch.no_grad():
            model(cases.tokens())
    print(f"rank {rank} finished the forward after {time.monotonic() - started:.1f} s", flush=True)
    sys.exit(0)


def main() -> None:
    scenario, out, *rest = sys.argv[1:]
    out = Path(out)
    if scenario == "model":
        dp, tp, hf, official = rest
        model_checks(out, int(dp), int(tp), hf, official)
    elif scenario == "engine":
        dp, tp, speculative = rest
        engine_checks(out, int(dp), int(tp), speculative)
    elif scenario == "lost":
        lost_rank(out)
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")


if __name__ == "__main__":
    main()
