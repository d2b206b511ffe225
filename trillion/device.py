"""The one place that knows device types: model, engine and quant code never name one.

What lives here, and why in one module:

* `accelerator()` / `default_device()`: the machine's accelerator through `torch.accelerator`
  (CUDA, Ascend NPU, XPU ...), or the CPU. Ascend's `torch_npu` registers the "npu" device type when
  imported; it is imported here, and only when it is installed (`load_npu`).
* `device_for_rank(local_rank)`: the device a torchrun rank uses, made current.
* `backend_for(device)`: the torch.distributed backend of a device type: gloo on the CPU, nccl on
  CUDA, hccl on Ascend (torch_npu's), xccl on XPU.
* capability checks the kernel dispatch asks: `has_fp8_block_gemm` (cuBLAS's 1x128 x 128x128 block
  FP8 GEMM needs a Hopper GPU, compute capability 9.x).
* `warn_reference_path(kind, device)`: the one-time warning a quantised module gives when it runs on
  an accelerator that has no native kernel for its format, so falls back to the reference path
  (dequantise, then a matmul in the compute dtype). On the CPU that path is the designed one: no
  warning.

A test (tests/plan/test_device.py) scans the package source and fails when a device-type string or
`torch.cuda` / `torch.npu` appears outside this module.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings

import torch

CPU = torch.device("cpu")

# torch.distributed backend per device type. torch_npu adds "npu" -> "hccl" to torch's own map when
# imported; the table says it explicitly so a plan or a launcher can name it without the package.
BACKENDS = {"cpu": "gloo", "cuda": "nccl", "npu": "hccl", "xpu": "xccl"}
HOPPER_MAJOR = 9  # compute capability of H100 / H800 / H200


@functools.cache
def load_npu() -> bool:
    """Import torch_npu if it is installed (it registers the "npu" device); True when it is."""
    if importlib.util.find_spec("torch_npu") is None:
        return False
    importlib.import_module("torch_npu")
    return True


def accelerator() -> torch.device | None:
    """The machine's accelerator device type (current index), or None on a CPU-only machine."""
    load_npu()
    if not torch.accelerator.is_available():
        return None
    acc = torch.accelerator.current_accelerator()
    return torch.device(acc.type, torch.accelerator.current_device_index())


def default_device() -> torch.device:
    """The accelerator if there is one, else the CPU."""
    return accelerator() or CPU


def device_for_rank(local_rank: int) -> torch.device:
    """The device of torchrun's LOCAL_RANK: accelerator `local_rank` (made current), or the CPU."""
    acc = accelerator()
    if acc is None:
        return CPU
    count = torch.accelerator.device_count()
    if not 0 <= local_rank < count:
        raise ValueError(f"local rank {local_rank}: this machine has {count} {acc.type} device(s)")
    torch.accelerator.set_device_index(local_rank)
    return torch.device(acc.type, local_rank)


def backend_for(device: torch.device | str) -> str:
    """The torch.distributed backend for tensors on `device` (gloo, nccl, hccl, xccl). A string is
    read as a device type, so "npu" is understood without torch_npu installed."""
    kind = device.split(":")[0] if isinstance(device, str) else device.type
    if kind in BACKENDS:
        return BACKENDS[kind]
    import torch.distributed as dist  # only for device types this table does not know

    try:
        return dist.get_default_backend_for_device(kind)
    except ValueError:
        raise ValueError(f"no torch.distributed backend known for device type {kind!r}") from None


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (for timing); nothing to wait for on the CPU."""
    device = torch.device(device)
    if device.type != CPU.type:
        torch.accelerator.synchronize(device)


def is_hopper(device: torch.device | str) -> bool:
    """A CUDA device of compute capability 9.x (H100, H800, H200)."""
    device = torch.device(device)
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] == HOPPER_MAJOR


def has_fp8_block_gemm(device: torch.device | str) -> bool:
    """Whether cuBLAS's FP8 GEMM with 1x128 activation and 128x128 weight block scales (F.scaled_mm,
    DeepSeek's recipe) runs here: on Hopper only (torch 2.13, CUDA >= 12.9)."""
    return is_hopper(device)


_warned: set[tuple[str, str]] = set()


def warn_reference_path(kind: str, device: torch.device | str) -> None:
    """Warn once per (kind, device type) that `kind` weights run the reference path on an
    accelerator (no native kernel wired for it there). Silent on the CPU and while compiling."""
    device = torch.device(device)
    if device.type == CPU.type or torch.compiler.is_compiling() or (kind, device.type) in _warned:
        return
    _warned.add((kind, device.type))
    warnings.warn(
        f"{kind} weights on {device.type}: no native kernel for this format here; dequantising to the "
        "compute dtype and multiplying with the plain matmul (the reference path)",
        stacklevel=3,
    )


__all__ = [
    "BACKENDS",
    "CPU",
    "accelerator",
    "backend_for",
    "default_device",
    "device_for_rank",
    "has_fp8_block_gemm",
    "is_hopper",
    "load_npu",
    "synchronize",
    "warn_reference_path",
]
