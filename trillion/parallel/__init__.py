"""Running one model across processes: a ("dp", "tp") mesh, tensor-parallel attention and vocabulary,
expert parallelism over every rank, sharded loading, and a watchdog for lost ranks.

    mesh = init_mesh(dp, tp, cfg=cfg)          # under torchrun; a bad mesh is refused with the reason
    model = load_sharded(folder, mesh)         # or parallelize(load_model(...), mesh) for small models
    ...                                        # every rank runs the same MoE layers each pass
    shutdown()

docs/distributed.md describes the split, the collectives and their cost.
"""

from .comm import counting
from .health import EXIT_RANK_LOST, RankLost, guard
from .layout import LayoutError, check_layout, require_layout
from .load import load_sharded
from .mesh import backend_for, init_mesh, shutdown
from .parallelize import attach, join_idle, parallelize, shard
from .shards import Placement

__all__ = [
    "EXIT_RANK_LOST",
    "LayoutError",
    "Placement",
    "RankLost",
    "attach",
    "backend_for",
    "check_layout",
    "counting",
    "guard",
    "init_mesh",
    "join_idle",
    "load_sharded",
    "parallelize",
    "require_layout",
    "shard",
    "shutdown",
]
