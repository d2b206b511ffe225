"""What `torchrun ... -m trillion generate|serve --tp T --dp D` does before and after its usual work.

    engine = start(model, tp=T, dp=D, dtype=..., **engine_options)   # every rank
    with running(engine) as leader:                                  # followers run inside, then leave
        if leader:
            ...                                                      # rank 0: the command as usual
Everything a bad launch can get wrong is refused before the checkpoint is read: no torchrun
environment, a mesh that does not match the world or the model (layout.check_layout).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..errors import UserError
from .engine import DistributedEngine
from .health import guard
from .mesh import init_mesh, shutdown


def mesh_shape(tp: int | None, dp: int | None) -> tuple[int, int]:
    """(dp, tp) for this launch: a missing one fills the world (default: tp = 1, dp = world, i.e.
    data-parallel attention with expert parallelism over every rank, as DeepSeek serves V4)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if "RANK" not in os.environ and (tp or 1) * (dp or 1) > 1:
        raise UserError(
            f"--tp {tp or 1} --dp {dp or 1} needs {(tp or 1) * (dp or 1)} processes: start them with torchrun, "
            f"e.g. torchrun --nproc-per-node {(tp or 1) * (dp or 1)} -m trillion ..."
        )
    tp = tp or (world // dp if dp and world % dp == 0 else 1)
    dp = dp or max(1, world // tp)
    if dp * tp != world:
        raise UserError(f"--dp {dp} x --tp {tp} = {dp * tp} processes, but {world} were started (WORLD_SIZE)")
    return dp, tp


def start(model: str, *, tp: int | None, dp: int | None, dtype: torch.dtype | None = None, seed: int = 0,
          **engine_options) -> DistributedEngine:
    """Join the run, load this rank's part of `model` (a folder or flavor) and build the engine."""
    from ..checkpoint import load_model
    from .load import load_sharded

    dp, tp = mesh_shape(tp, dp)
    cfg = load_model(model, device="meta").cfg  # the config alone: a bad mesh fails before any read
    mesh = init_mesh(dp, tp, cfg=cfg)
    with guard():
        part = load_sharded(model, mesh, dtype=dtype, seed=seed).eval()
        return DistributedEngine(part, mesh, **engine_options)


@contextmanager
def running(engine: DistributedEngine) -> Iterator[bool]:
    """Yields True on rank 0 (it runs the command) after the others have started following it;
    on leaving, rank 0 ends their loops and every rank leaves the process group."""
    try:
        with guard():
            if not engine.leader:
                engine.follow()
                yield False
            else:
                try:
                    yield True
                finally:
                    engine.close()
    finally:
        shutdown()
