"""OCP microscaling (MX) along the last dim: blocks of `block` elements share one UE8M0 scale.

  MXFP8: E4M3 elements, q stored as torch.float8_e4m3fn [..., K]       (Ascend 950 native)
  MXFP4: E2M1 elements, q stored packed as torch.int8 [..., K // 2]    (DeepSeek V4 routed experts)
  scale: torch.float8_e8m0fnu [..., K // block]

FP4 packing (DeepSeek's V4 release layout, also torch.float4_e2m1fn_x2's): element 2j sits in the
LOW nibble of byte j, element 2j+1 in the HIGH nibble; the byte is stored as int8.

Legend: K last dim, B = K // block blocks, L leading dims.
"""

from __future__ import annotations

import torch

from trillion.formats import e8m0
from trillion.formats.codec import decode, encode
from trillion.formats.scales import check_finite, check_float, scale_values, ue8m0_scale

ELEM_MAX = {"e4m3": 448.0, "e2m1": 6.0}
MIN_SCALE = 2.0**-126  # amax floor = elem_max * MIN_SCALE keeps all-zero blocks at a normal scale


def pack_fp4(codes: torch.Tensor) -> torch.Tensor:
    """uint8 e2m1 codes [..., K] (K even) -> int8 [..., K // 2], element 2j in the low nibble."""
    if codes.dtype != torch.uint8 or codes.shape[-1] % 2:
        raise ValueError(
            f"pack_fp4: expected uint8 codes with an even last dim, got {codes.dtype} {list(codes.shape)}"
        )
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).view(torch.int8)


def unpack_fp4(packed: torch.Tensor) -> torch.Tensor:
    """int8 or uint8 [..., K // 2] -> uint8 e2m1 codes [..., K]; inverse of pack_fp4."""
    if packed.dtype not in (torch.int8, torch.uint8):
        raise TypeError(f"unpack_fp4: expected packed FP4 as int8 or uint8, got dtype {packed.dtype}")
    p = packed.view(torch.uint8)
    return torch.stack((p & 0x0F, p >> 4), dim=-1).flatten(-2)  # [..., K/2, 2] -> [..., K]


def _check_elem(elem: str, who: str) -> float:
    if elem not in ELEM_MAX:
        raise ValueError(f"{who}: unknown MX element format {elem!r}; expected one of {tuple(ELEM_MAX)}")
    return ELEM_MAX[elem]


def quantize_mx(
    w: torch.Tensor, elem: str = "e4m3", block: int = 32, scale_rule: str = "ceil"
) -> tuple[torch.Tensor, torch.Tensor]:
    """w [..., K] -> (q, scale): see the module docstring for their dtypes and shapes.

    Steps: amax per block (floored at elem_max * 2**-126), UE8M0 scale by `scale_rule` ("ceil":
    DeepSeek's 2**ceil(log2(amax / elem_max)); "floor": the OCP spec), divide (exact: a power of
    two), round to the element format with saturation, pack FP4.
    """
    who = "quantize_mx"
    elem_max = _check_elem(elem, who)
    check_float(w, who, "w")
    if w.dim() == 0 or w.shape[-1] % block:
        raise ValueError(f"{who}: the last dim of w {list(w.shape)} must be a multiple of block={block}")
    check_finite(w, who, "w")
    wb = w.float().unflatten(-1, (-1, block))  # [L..., B, block]
    amax = wb.abs().amax(dim=-1).clamp(min=elem_max * MIN_SCALE)  # [L..., B]
    scale = ue8m0_scale(amax, elem_max, scale_rule)
    codes = encode(wb / e8m0.decode(scale)[..., None], elem).flatten(-2)  # [L..., K]
    q = codes.view(torch.float8_e4m3fn) if elem == "e4m3" else pack_fp4(codes)
    return q, scale.view(torch.float8_e8m0fnu)


def dequantize_mx(
    q: torch.Tensor, scale: torch.Tensor, elem: str = "e4m3", dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(q, scale) from quantize_mx -> values [..., K]; the block size is K // scale.shape[-1]."""
    who = "dequantize_mx"
    _check_elem(elem, who)
    if elem == "e4m3":
        if q.dtype not in (torch.float8_e4m3fn, torch.uint8):
            raise TypeError(f"{who}: expected q as torch.float8_e4m3fn for e4m3, got dtype {q.dtype}")
        codes = q.view(torch.uint8)
    else:
        codes = unpack_fp4(q)
    s = scale_values(scale, who)
    K, B = codes.shape[-1], (s.shape[-1] if s.dim() else 0)
    if codes.shape[:-1] != s.shape[:-1] or B == 0 or K % B:
        raise ValueError(
            f"{who}: scale {list(s.shape)} does not tile {elem} values {list(codes.shape)} "
            "(expected the same leading dims and a last dim dividing K)"
        )
    v = decode(codes, elem).unflatten(-1, (B, K // B)) * s[..., None]  # [L..., B, block]
    return v.flatten(-2).to(dtype)
