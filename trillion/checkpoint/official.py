"""The official release's storage: FP8 / FP4 weights with UE8M0 block scales, and their inverse.

Which tensor gets which storage is `layouts.official_storage` (one table). Here:

  fp8   `.weight` float8_e4m3fn [N, K]  + `.scale` float8_e8m0fnu [ceil(N/128), ceil(K/128)]
  fp4   `.weight` int8 [N, K/2]          + `.scale` float8_e8m0fnu [N, K/32]; K must divide by 32
        (two e2m1 codes a byte, element 2j in the low nibble)
  bf16, fp32, int64                        plain tensors

Reading goes by what the file holds, not by the table: a float8_e4m3fn tensor is FP8, an int8 or
uint8 tensor standing for a floating parameter is packed FP4; both need their `.scale`.
"""

from __future__ import annotations

import math

import torch

from ..config import ceil_div
from ..formats import dequantize_fp4_blocks, dequantize_fp8_blocks, quantize_fp4_blocks, quantize_fp8_blocks
from .errors import CheckpointError
from .layouts import official_storage

FP8_BLOCK = (128, 128)
FP4_BLOCK = 32
QUANTIZATION_CONFIG = {
    "quant_method": "fp8",
    "fmt": "e4m3",
    "scale_fmt": "ue8m0",
    "weight_block_size": list(FP8_BLOCK),
    "activation_scheme": "dynamic",
}
EXPERT_DTYPE = "fp4"
PACKED_FP4 = (torch.int8, torch.uint8)
SCALE_DTYPES = (torch.float8_e8m0fnu, torch.float32)


def scale_name(weight_name: str) -> str:
    """`layers.0.attn.wq_a.weight` -> `layers.0.attn.wq_a.scale`."""
    if not weight_name.endswith(".weight"):
        raise ValueError(f"only `.weight` tensors carry a block scale, not {weight_name!r}")
    return weight_name[: -len("weight")] + "scale"


def weight_of_scale(name: str) -> str | None:
    """`....scale` -> the `....weight` it scales; None for other names."""
    return name[: -len("scale")] + "weight" if name.endswith(".scale") else None


def fp8_scale_shape(shape: tuple[int, ...], block: tuple[int, int] = FP8_BLOCK) -> tuple[int, int]:
    n, k = shape
    return math.ceil(n / block[0]), math.ceil(k / block[1])


def check_encodable(name: str, shape: tuple[int, ...]) -> None:
    """Raise before anything is written if `name` cannot take its official storage."""
    kind = official_storage(name)
    if kind in ("fp8", "fp4") and len(shape) != 2:
        raise CheckpointError(f"tensor {name!r}: {kind} storage needs a 2-D weight, got shape {list(shape)}")
    if kind == "fp4" and shape[1] % FP4_BLOCK:
        raise CheckpointError(
            f"tensor {name!r} of shape {list(shape)}: FP4 storage needs the input width (dim 1) to be a "
            f"multiple of {FP4_BLOCK}, got {shape[1]}; choose a config whose dim and moe_inter_dim divide by "
            f"{FP4_BLOCK}, or save with layout='hf'"
        )


def stored_nbytes(name: str, shape: tuple[int, ...]) -> int:
    """Bytes `name` takes in the official layout, scales included (for planning shards)."""
    numel, kind = math.prod(shape), official_storage(name)
    if kind == "fp8":
        return numel + math.prod(fp8_scale_shape(shape))
    if kind == "fp4":  # two e2m1 codes a byte along the input, one e8m0 scale per FP4_BLOCK inputs
        rows, k = math.prod(shape[:-1]), shape[-1]
        return rows * ceil_div(k, 2) + rows * ceil_div(k, FP4_BLOCK)
    return numel * {"bf16": 2, "fp32": 4, "int64": 8}[kind]


@torch.no_grad()
def encode_official(name: str, t: torch.Tensor) -> dict[str, torch.Tensor]:
    """Our tensor `name` -> the tensors the release stores for it (weight, and its scale if quantised)."""
    check_encodable(name, tuple(t.shape))
    kind = official_storage(name)
    if kind == "fp8":
        q, s = quantize_fp8_blocks(t.float(), FP8_BLOCK)
        return {name: q, scale_name(name): s}
    if kind == "fp4":
        q, s = quantize_fp4_blocks(t.float(), FP4_BLOCK)
        return {name: q, scale_name(name): s}
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32, "int64": torch.int64}[kind]
    return {name: t.to(dtype).contiguous()}


def is_quantized(dtype: torch.dtype | None) -> bool:
    """Does a stored tensor of `dtype` stand quantised for a floating parameter (needs a scale)?"""
    return dtype == torch.float8_e4m3fn or dtype in PACKED_FP4


def stored_shape(dtype: torch.dtype, shape: tuple[int, ...], fp8_block: tuple[int, int] = FP8_BLOCK):
    """(weight shape, scale shape) a quantised tensor of `dtype` must have for a parameter of `shape`.

    None for the weight when the parameter cannot be stored so (not 2-D, odd width for FP4).
    """
    if len(shape) != 2:
        return None, None
    n, k = shape
    if dtype == torch.float8_e4m3fn:
        return (n, k), fp8_scale_shape(shape, fp8_block)
    if k % FP4_BLOCK:
        return None, None
    return (n, k // 2), (n, k // FP4_BLOCK)


def dequantize(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype, fp8_block=FP8_BLOCK) -> torch.Tensor:
    """A stored quantised weight and its scale -> the weight in `dtype`."""
    if q.dtype == torch.float8_e4m3fn:
        return dequantize_fp8_blocks(q, scale, dtype, tuple(fp8_block))
    return dequantize_fp4_blocks(q, scale, dtype)
