"""The process mesh: dims `dp` x `tp` over the processes torchrun started, on the right backend.

`init_mesh(dp, tp)` reads the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT), refuses a mesh that does not fit (before anything is loaded), joins the process group
on the backend the device wants, starts the heartbeat watchdog (health.py) and returns a
`torch.distributed.device_mesh.DeviceMesh` with dims ("dp", "tp"): ranks r = dp_index * tp +
tp_index, so a tp group is tp consecutive ranks. `shutdown()` leaves cleanly.

The one place that names device kinds is `backend_for` (trillion/device.py will take it over).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from ..config import ModelConfig
from . import health
from .layout import LayoutError, require_layout

DIMS = ("dp", "tp")


def backend_for(device_type: str | None = None) -> tuple[str, str]:
    """(device type, collective backend): gloo on CPU, nccl on CUDA, hccl on Ascend (torch_npu).

    device_type None: the machine's accelerator if there is one (Ascend when torch_npu imports),
    else the CPU."""
    if device_type is None:
        try:
            import torch_npu  # noqa: F401  (registers the "npu" device and the hccl backend)
        except ImportError:
            pass
        acc = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
        device_type = acc.type if acc is not None else "cpu"
    backends = {"cpu": "gloo", "cuda": "nccl", "npu": "hccl"}
    if device_type not in backends:
        raise ValueError(f"no collective backend known for device {device_type!r}; expected one of {list(backends)}")
    return device_type, backends[device_type]


def world_from_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the launcher's environment (torchrun sets them)."""
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(
            f"environment variables {missing} are not set: start the processes with torchrun "
            "(torchrun --nproc-per-node N ...)"
        )
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return rank, world, int(os.environ.get("LOCAL_RANK", rank))


def init_mesh(
    dp: int,
    tp: int,
    *,
    cfg: ModelConfig | None = None,
    device_type: str | None = None,
    timeout: float = 600.0,
    heartbeat: float = 1.0,
    grace: float = 30.0,
    on_lost: Callable[[str], None] | None = None,
) -> DeviceMesh:
    """Join the processes of this run and return their ("dp", "tp") mesh.

    cfg: when given, a mesh that cannot hold it (layout.check_layout) is refused here, with every
    reason, before any process group exists. timeout: seconds a collective may block (the backend's
    own timeout). heartbeat / grace: the watchdog's beat interval and how long a silent rank is
    waited for before the others stop naming it (health.py); on_lost(message) replaces the default
    (print the message, exit with health.EXIT_RANK_LOST) and runs on the watchdog's thread."""
    rank, world, local_rank = world_from_env()
    if cfg is not None:
        require_layout(cfg, dp=dp, tp=tp, world=world)
    elif dp * tp != world:
        raise LayoutError(f"dp x tp = {dp} x {tp} = {dp * tp}, but {world} processes were started; launch dp x tp")
    device_type, backend = backend_for(device_type)
    if device_type != "cpu":
        torch.accelerator.set_device_index(local_rank)
    limit = timedelta(seconds=timeout)
    if not dist.is_initialized():
        store, rank, world = next(dist.rendezvous("env://", rank, world, timeout=limit))
        store.set_timeout(limit)
        dist.init_process_group(
            backend, store=dist.PrefixStore("default_pg", store), rank=rank, world_size=world, timeout=limit
        )
        health.Watchdog(store, rank, world, interval=heartbeat, grace=grace, on_lost=on_lost).start()
    return init_device_mesh(device_type, (dp, tp), mesh_dim_names=DIMS)


def shutdown() -> None:
    """Leave the run: stop the watchdog (marking this rank done), wait for every rank, then destroy
    the process group. The rank that hosts the store may leave first; nobody watches it any more."""
    w = health.current()
    if w is not None:
        w.stop()
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
