"""Read a safetensors file's header without touching its data, and check the file is whole.

Layout of a safetensors file: 8 bytes little-endian header length N, N bytes of JSON
({name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}), then the data;
offsets count from the end of the header. Reading only the header lets the loader check every name,
shape and dtype before it reads a byte of weights, and name the file when something is off.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import CheckpointError, listing

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "F8_E8M0": torch.float8_e8m0fnu,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U64": torch.uint64,
    "U32": torch.uint32,
    "U16": torch.uint16,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as a file's header describes it."""

    name: str  # the checkpoint's name
    file: Path
    dtype: torch.dtype | None  # None: a dtype torch cannot hold (kept for the error message)
    dtype_name: str  # safetensors' spelling, e.g. "F8_E4M3"
    shape: tuple[int, ...]
    nbytes: int
    offset: int = 0  # where its bytes start in the file (for reading a part: trillion.parallel.read)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def where(self) -> str:
        return f"{self.file.name}: tensor {self.name!r}"


def read_header(file: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """file -> ({name: TensorInfo}, metadata); CheckpointError when missing, truncated or corrupt."""
    file = Path(file)
    if not file.is_file():
        raise CheckpointError(f"{file}: safetensors file does not exist")
    size = file.stat().st_size
    with open(file, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(
                f"{file}: truncated safetensors file ({size} bytes, under its 8-byte preamble)"
            )
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER or 8 + n > size:
            raise CheckpointError(
                f"{file}: corrupt or truncated safetensors file (header length {n} bytes, file {size} bytes)"
            )
        raw = f.read(n)
    try:
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")  # noqa: TRY004 (caught just below)
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{file}: corrupt safetensors header ({e})") from None
    metadata = header.pop("__metadata__", None) or {}
    tensors, ends, end = {}, {}, 0
    for name, entry in header.items():
        try:
            dtype_name, shape = str(entry["dtype"]), tuple(int(s) for s in entry["shape"])
            begin, stop = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{file}: tensor {name!r}: corrupt header entry {entry!r}") from None
        dtype = DTYPES.get(dtype_name)
        if dtype is not None and (stop - begin) != math.prod(shape) * dtype.itemsize:
            raise CheckpointError(
                f"{file}: tensor {name!r}: header gives {stop - begin} bytes for {dtype_name} {list(shape)}; "
                f"expected {math.prod(shape) * dtype.itemsize}"
            )
        tensors[name] = TensorInfo(name, file, dtype, dtype_name, shape, stop - begin, 8 + n + begin)
        ends[name] = stop
        end = max(end, stop)
    if 8 + n + end != size:
        cut = [t for t, stop in ends.items() if 8 + n + stop > size]
        detail = f"; tensors cut off: {listing(cut)}" if cut else ""
        raise CheckpointError(
            f"{file}: truncated or corrupt safetensors file: it is {size} bytes but its header describes "
            f"{8 + n + end} bytes{detail}"
        )
    return tensors, metadata
