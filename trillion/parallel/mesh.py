"""The process mesh: dims `dp` x `tp` over the processes torchrun started, on the right backend.

`init_mesh(dp, tp)` reads the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT), refuses a mesh that does not fit (before anything is loaded), joins the process group
on the backend the device wants, starts the heartbeat watchdog (health.py) and returns a
`torch.distributed.device_mesh.DeviceMesh` with dims ("dp", "tp"): ranks r = dp_index * tp +
tp_index, so a tp group is tp consecutive ranks. `shutdown()` leaves cleanly.

Device kinds and their backends are trillion.device's (gloo on the CPU, nccl on CUDA, hccl on
Ascend through torch_npu).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta

import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from ..config import ModelConfig
from ..device import CPU, backend_for, device_for_rank
from . import health
from .layout import LayoutError, require_layout

DIMS = ("dp", "tp")


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
    reason, before any process group exists. device_type: None for the machine's accelerator (rank
    LOCAL_RANK's device, made current) or the CPU; "cpu" to stay on the CPU anyway. timeout:
    seconds a collective may block (the backend's own timeout). heartbeat / grace: the watchdog's beat interval and how long a silent rank is
    waited for before the others stop naming it (health.py); on_lost(message) replaces the default
    (print the message, exit with health.EXIT_RANK_LOST) and runs on the watchdog's thread."""
    rank, world, local_rank = world_from_env()
    if cfg is not None:
        require_layout(cfg, dp=dp, tp=tp, world=world)
    elif dp * tp != world:
        raise LayoutError(f"world size {world} != dp x tp = {dp} x {tp} = {dp * tp}: launch dp x tp processes")
    # this rank's accelerator (made current), or the CPU; device_type="cpu" keeps an accelerator
    # machine's ranks on the CPU (gloo), as the tests do
    dev = CPU if device_type == CPU.type else device_for_rank(local_rank)
    if device_type not in (None, dev.type):
        raise ValueError(f"device_type = {device_type!r}, but this machine's device is {dev.type!r}")
    backend = backend_for(dev)
    limit = timedelta(seconds=timeout)
    if not dist.is_initialized():
        store, rank, world = next(dist.rendezvous("env://", rank, world, timeout=limit))
        store.set_timeout(limit)
        dist.init_process_group(
            backend, store=dist.PrefixStore("default_pg", store), rank=rank, world_size=world, timeout=limit
        )
        health.Watchdog(store, rank, world, interval=heartbeat, grace=grace, on_lost=on_lost).start()
    return init_device_mesh(dev.type, (dp, tp), mesh_dim_names=DIMS)


def shutdown() -> None:
    """Leave the run: stop the watchdog (marking this rank done), wait for every rank, then destroy
    the process group. The rank that hosts the store may leave first; nobody watches it any more."""
    w = health.current()
    if w is not None:
        w.stop()
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
