"""Block quantisation as DeepSeek's checkpoints and inference code use it.

  weights, FP8:  q float8_e4m3fn [N, K], one scale per 128 x 128 block, float8_e8m0fnu
                 [ceil(N/128), ceil(K/128)] (V3.1+; V3 stored float32 amax / 448 instead).
                 A block that runs past the matrix edge is padded with zeros for its amax, so its
                 scale covers the partial block; the padding is cropped again.
  weights, FP4:  V4 routed experts = MXFP4: packed int8 [N, K // 2], one UE8M0 scale per 32 along K.
  activations:   fake quantisation (quantise then dequantise) per block along the last dim, as in
                 DeepSeek's inference code: FP8 per 128, FP4 per 32.

UE8M0 scale rule everywhere: s = 2**ceil(log2(amax / elem_max)), so |x| / s never exceeds the
element max. amax floors: 1e-4 for FP8 (DeepSeek's), 6 * 2**-126 for FP4 (smallest normal scale).

Legend: N rows (out features), K cols (in features, the reduction dim), bn x bk block,
SN = ceil(N / bn), SK = ceil(K / bk).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from trillion.formats import e8m0
from trillion.formats.codec import decode, encode
from trillion.formats.hadamard import hadamard  # noqa: F401  (re-exported with MX: one import for callers)
from trillion.formats.mx import dequantize_mx, quantize_mx
from trillion.formats.scales import check_finite, check_float, scale_values, ue8m0_scale

FP8_MAX, FP4_MAX = 448.0, 6.0
FP8_AMAX_FLOOR = 1e-4
FP4_AMAX_FLOOR = FP4_MAX * 2.0**-126
SCALE_FMTS = ("ue8m0", None)


def _check_scale_fmt(scale_fmt: str | None, who: str) -> None:
    if scale_fmt not in SCALE_FMTS:
        raise ValueError(f"{who}: scale_fmt must be 'ue8m0' or None (float32 amax / 448), got {scale_fmt!r}")


def _scales(amax: torch.Tensor, elem_max: float, scale_fmt: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """amax -> (scale as float32 for the math, scale as stored: float8_e8m0fnu or float32)."""
    if scale_fmt is None:
        s = amax / elem_max
        return s, s
    codes = ue8m0_scale(amax, elem_max)
    return e8m0.decode(codes), codes.view(torch.float8_e8m0fnu)


def quantize_fp8_blocks(
    w: torch.Tensor, block: tuple[int, int] = (128, 128), scale_fmt: str | None = "ue8m0"
) -> tuple[torch.Tensor, torch.Tensor]:
    """w [N, K] -> (q float8_e4m3fn [N, K], scale [SN, SK]) with one scale per bn x bk block."""
    who = "quantize_fp8_blocks"
    _check_scale_fmt(scale_fmt, who)
    check_float(w, who, "w")
    if w.dim() != 2:
        raise ValueError(f"{who}: expected a 2-D weight [N, K], got shape {list(w.shape)}")
    check_finite(w, who, "w")
    (N, K), (bn, bk) = w.shape, block
    SN, SK = math.ceil(N / bn), math.ceil(K / bk)
    wp = F.pad(w.float(), (0, SK * bk - K, 0, SN * bn - N))  # zeros never raise a block's amax
    wb = wp.view(SN, bn, SK, bk)
    amax = wb.abs().amax(dim=(1, 3)).clamp(min=FP8_AMAX_FLOOR)  # [SN, SK]
    s, stored = _scales(amax, FP8_MAX, scale_fmt)
    codes = encode(wb / s[:, None, :, None], "e4m3").view(SN * bn, SK * bk)[:N, :K]
    return codes.contiguous().view(torch.float8_e4m3fn), stored


def dequantize_fp8_blocks(
    q: torch.Tensor,
    scale: torch.Tensor,
    dtype: torch.dtype = torch.float32,
    block: tuple[int, int] = (128, 128),
) -> torch.Tensor:
    """(q [N, K], scale [SN, SK] float8_e8m0fnu or float32) -> w [N, K] as dtype."""
    who = "dequantize_fp8_blocks"
    if q.dtype != torch.float8_e4m3fn or q.dim() != 2:
        raise ValueError(f"{who}: expected q as 2-D torch.float8_e4m3fn, got {q.dtype} {list(q.shape)}")
    s = scale_values(scale, who)
    (N, K), (bn, bk) = q.shape, block
    if tuple(s.shape) != (math.ceil(N / bn), math.ceil(K / bk)):
        raise ValueError(
            f"{who}: scale {list(s.shape)} does not tile q {list(q.shape)} in {bn}x{bk} "
            f"blocks; expected [{math.ceil(N / bn)}, {math.ceil(K / bk)}]"
        )
    s_full = s.repeat_interleave(bn, dim=0).repeat_interleave(bk, dim=1)[:N, :K]  # [N, K]
    return (decode(q.view(torch.uint8), "e4m3") * s_full).to(dtype)


def quantize_fp4_blocks(w: torch.Tensor, block: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """w [N, K] -> (packed int8 [N, K // 2], scale float8_e8m0fnu [N, K // block]); MXFP4.

    K must be a multiple of `block` (no edge padding along K: DeepSeek's FP4 experts never need it).
    """
    if w.dim() < 1 or w.shape[-1] % block:
        raise ValueError(
            f"quantize_fp4_blocks: K (last dim) of w {list(w.shape)} must be a multiple of block={block}"
        )
    return quantize_mx(w, "e2m1", block)


def dequantize_fp4_blocks(
    packed: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(packed int8 [N, K // 2], scale [N, K // block]) -> w [N, K] as dtype."""
    return dequantize_mx(packed, scale, "e2m1", dtype)


def _fake_quant(x: torch.Tensor, block: int, elem: str, floor: float, scale_fmt: str | None, who: str):
    check_float(x, who, "x")
    if x.dim() == 0 or x.shape[-1] % block:
        raise ValueError(f"{who}: the last dim of x {list(x.shape)} must be a multiple of block={block}")
    elem_max = FP8_MAX if elem == "e4m3" else FP4_MAX
    xb = x.float().unflatten(-1, (-1, block))  # [..., K / block, block]
    amax = xb.abs().amax(dim=-1, keepdim=True).clamp(min=floor)  # [..., K / block, 1]
    # A NaN or Inf turns its whole block into NaN rather than raising: checking would cost a host
    # sync per call on an accelerator, and a poisoned block is as visible as the bad value itself.
    bad = ~torch.isfinite(amax)
    s, _ = _scales(torch.where(bad, 1.0, amax), elem_max, scale_fmt)
    q = decode(encode(torch.where(bad, 0.0, xb / s), elem), elem) * s
    return torch.where(bad, float("nan"), q).flatten(-2).to(x.dtype)


def fake_quant_fp8(x: torch.Tensor, block: int = 128, scale_fmt: str | None = "ue8m0") -> torch.Tensor:
    """x [..., K] -> x rounded through FP8 E4M3 with one scale per `block` along K; a new tensor.

    A block holding NaN or Inf comes back all NaN.
    """
    _check_scale_fmt(scale_fmt, "fake_quant_fp8")
    return _fake_quant(x, block, "e4m3", FP8_AMAX_FLOOR, scale_fmt, "fake_quant_fp8")


def fake_quant_fp4(x: torch.Tensor, block: int = 32) -> torch.Tensor:
    """x [..., K] -> x rounded through FP4 E2M1 with one UE8M0 scale per `block` along K; a new tensor."""
    return _fake_quant(x, block, "e2m1", FP4_AMAX_FLOOR, "ue8m0", "fake_quant_fp4")
