"""Running one model across processes: a ("dp", "tp") mesh, tensor-parallel attention and vocabulary,
expert parallelism over every rank, sharded loading, and a watchdog for lost ranks.

    mesh = init_mesh(dp, tp, cfg=cfg)          # under torchrun; a bad mesh is refused with the reason
    model = load_sharded(folder, mesh)         # or parallelize(load_model(...), mesh) for small models
    ...                                        # every rank runs the same MoE layers each pass
    shutdown()

Which meshes are valid (`layout`) is pure arithmetic on the config, shared with the deployment
planner (`trillion plan`); importing this package does not import torch.distributed until the
distributed parts are used. docs/distributed.md describes the split, the collectives and their cost.
"""

from .layout import LayoutError, check_layout, require_layout

_DISTRIBUTED = {
    "counting": "comm",
    "EXIT_RANK_LOST": "health",
    "RankLost": "health",
    "guard": "health",
    "load_sharded": "load",
    "init_mesh": "mesh",
    "shutdown": "mesh",
    "attach": "apply",
    "join_idle": "apply",
    "parallelize": "apply",
    "shard": "apply",
    "Placement": "shards",
}


def launched() -> bool:
    """Whether this process is one of several started by torchrun (or an equivalent launcher): a
    check of the environment, cheap enough for every command's start-up."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def __getattr__(name: str):
    """The distributed parts load on first use (the planner imports `layout` alone)."""
    if name in _DISTRIBUTED:
        import importlib

        return getattr(importlib.import_module(f".{_DISTRIBUTED[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [  # noqa: RUF022 (the layout names, then the lazily loaded ones in _DISTRIBUTED's order)
    "LayoutError", "check_layout", "launched", "require_layout",
    "counting", "EXIT_RANK_LOST", "RankLost", "guard", "load_sharded", "init_mesh", "shutdown",
    "attach", "join_idle", "parallelize", "shard", "Placement",
]
