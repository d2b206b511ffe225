"""Read part of a tensor from a safetensors file: only its bytes, into fresh memory.

safetensors' own slices either read the whole tensor first (the pread backend) or keep every page
they touch mapped until the file closes (mmap), so a rank reading its parts of a shard would peak
at far more than its part. Here a part is read with positioned reads straight into the tensor that
keeps it (the file's header gives each tensor's offset: checkpoint.header.TensorInfo):
  rows [a, b) (a cut along dim 0, or the whole tensor)   one read of (b - a) rows;
  a cut along dim 1                                      whole rows, a bounded block at a time,
                                                         each narrowed into the result.
"""

from __future__ import annotations

import math

import torch

from ..checkpoint.errors import CheckpointError
from ..checkpoint.header import TensorInfo
from .shards import Cut

BLOCK_BYTES = 16 << 20  # rows read at once for a column cut: bounds the extra memory


def read_part(info: TensorInfo, cut: Cut | None = None) -> torch.Tensor:
    """The `cut` part (None: all) of the stored tensor `info`, in its stored dtype, in fresh memory."""
    if info.dtype is None:
        raise CheckpointError(f"{info.where()}: dtype {info.dtype_name} cannot be read into a torch tensor")
    shape = list(info.shape)
    with open(info.file, "rb", buffering=0) as f:
        if cut is None or cut.dim == 0:
            a, b = (0, shape[0] if shape else 1) if cut is None else (cut.start, cut.stop)
            out = torch.empty([b - a, *shape[1:]] if shape else [], dtype=info.dtype)
            row = info.dtype.itemsize * math.prod(shape[1:])
            _read_into(f, out, info.offset + a * row, info)
            return out
        # a cut along dim 1 (the only other cut): whole rows in blocks, each narrowed
        out = torch.empty([shape[0], cut.stop - cut.start, *shape[2:]], dtype=info.dtype)
        row = info.dtype.itemsize * math.prod(shape[1:])
        per = max(1, BLOCK_BYTES // max(row, 1))
        for r0 in range(0, shape[0], per):
            r1 = min(shape[0], r0 + per)
            block = torch.empty([r1 - r0, *shape[1:]], dtype=info.dtype)
            _read_into(f, block, info.offset + r0 * row, info)
            out[r0:r1] = block.narrow(1, cut.start, cut.stop - cut.start)
        return out


def _read_into(f, t: torch.Tensor, offset: int, info: TensorInfo) -> None:
    """Fill the contiguous tensor `t` with the file's bytes from `offset` on."""
    if not t.numel():
        return
    view = memoryview(t.reshape(-1).view(torch.uint8).numpy())
    f.seek(offset)
    done = 0
    while done < len(view):
        n = f.readinto(view[done:])
        if not n:
            raise CheckpointError(f"{info.where()}: the file ended while reading the tensor")
        done += n
