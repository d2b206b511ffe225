"""INT8 and INT4 weight-only quantisation: symmetric integers with per-channel or per-group scales.

  int8  q int8 [N, K] in [-127, 127], scale [N] (one per output channel):      w ~= q * scale[n]
  int4  q in [-8, 7] stored as q + 8 (0..15), two codes a byte, element 2j in the LOW nibble (as
        DeepSeek packs FP4), uint8 [N, K // 2]; scale [N, K // g], one per group of g along K:
                                                                               w ~= q * scale[n, k // g]

Scales are bfloat16, rounded UP from amax / qmax, so |w| / scale never exceeds qmax and nothing is
clipped. A bf16 scale is exact in every dtype the kernels take (float32, bfloat16), so the fast CPU
kernels and the reference dequantisation see the same weight. Rounding is to nearest (ties to even),
so each element's error is at most half a step, scale / 2.

Legend: N rows (out features), K cols (in features, the reduction dim), g group size.
"""

from __future__ import annotations

import torch

from ..formats import pack_fp4, unpack_fp4

INT8_MAX, INT4_MAX = 127, 7
INT4_OFFSET = 8  # stored code = q + 8, the convention of PyTorch's int4 kernels (and GGUF's q4_0)
INT4_GROUPS = (32, 64, 128, 256)  # what PyTorch's CPU int4 kernel accepts
SCALE_DTYPE = torch.bfloat16
MIN_SCALE = 2.0**-126  # an all-zero row or group still gets a normal, positive scale


def bf16_scale(amax: torch.Tensor, qmax: int) -> torch.Tensor:
    """The smallest bfloat16 s >= amax / qmax (so round(|w| / s) <= qmax); positive, elementwise."""
    s = (amax.float() / qmax).clamp(min=MIN_SCALE)
    b = s.to(SCALE_DTYPE)
    low = b.float() < s  # rounded down: step to the next bf16 up (positive values: bits + 1)
    return torch.where(low, (b.view(torch.int16) + 1).view(SCALE_DTYPE), b)


def _check(w: torch.Tensor, who: str) -> None:
    if w.dim() != 2 or not w.is_floating_point():
        raise ValueError(f"{who}: expected a 2-D floating weight [N, K], got {w.dtype} {list(w.shape)}")


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w [N, K] -> (q int8 [N, K], scale bf16 [N]): one symmetric scale per output channel."""
    _check(w, "quantize_int8")
    wf = w.float()
    s = bf16_scale(wf.abs().amax(dim=1), INT8_MAX)  # [N]
    q = torch.round(wf / s.float()[:, None]).clamp(-INT8_MAX, INT8_MAX)
    return q.to(torch.int8), s


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(q int8 [N, K], scale [N]) -> w [N, K] as dtype."""
    return (q.float() * scale.float()[:, None]).to(dtype)


def quantize_int4(w: torch.Tensor, group: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """w [N, K] -> (packed uint8 [N, K // 2], scale bf16 [N, K // group]); K must divide by group."""
    _check(w, "quantize_int4")
    n, k = w.shape
    if group not in INT4_GROUPS:
        raise ValueError(f"quantize_int4: group size {group} is not one of {INT4_GROUPS}")
    if k % group:
        raise ValueError(
            f"quantize_int4: the input width K = {k} of w {list(w.shape)} must be a multiple of "
            f"the group size {group}"
        )
    wg = w.float().view(n, k // group, group)  # [N, K/g, g]
    s = bf16_scale(wg.abs().amax(dim=-1), INT4_MAX)  # [N, K/g]
    q = torch.round(wg / s.float()[..., None]).clamp(-INT4_MAX, INT4_MAX)
    codes = (q + INT4_OFFSET).to(torch.uint8).view(n, k)
    return pack_int4(codes), s


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes 0..15 [..., K] -> uint8 [..., K // 2], element 2j in the low nibble."""
    return pack_fp4(codes).view(torch.uint8)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """uint8 [..., K // 2] -> uint8 codes 0..15 [..., K]; inverse of pack_int4."""
    return unpack_fp4(packed)


def dequantize_int4(
    packed: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(packed uint8 [N, K // 2], scale [N, K // g]) -> w [N, K] as dtype."""
    codes = unpack_int4(packed)
    n, k = codes.shape
    groups = scale.shape[-1]
    q = codes.float().view(n, groups, k // groups) - INT4_OFFSET
    return (q * scale.float()[..., None]).view(n, k).to(dtype)
