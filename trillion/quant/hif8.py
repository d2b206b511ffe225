"""HiF8 weights: HiFloat8 codes with one power-of-two (UE8M0) scale per 128 x 128 block.

HiF8 is tapered: exponents -3..3 carry 3 mantissa bits, 4..7 two, 8..15 one (docs/formats.md). Its
3-bit range tops out at 2**3 * 1.875 = 15, so the scale puts each block's amax into (7.5, 15]:
s = 2**ceil(log2(amax / 15)). Values down to amax / 120 then keep the full 3 bits; smaller ones lose
precision gradually rather than flushing (HiF8 reaches down to 2**-22). Encoding saturates (no Inf
can come out of a finite block anyway) and rounds half away from zero, as the format defines.
Edge blocks are padded with zeros for their amax, as DeepSeek's FP8 blocks are.

Kernels: no device runs HiF8 natively here yet (Ascend 950's HiF8 cube unit is the target), so
HiF8Linear multiplies by dequantising with these functions' fast twin and calling F.linear; off the
CPU it warns once that it does (trillion.device.warn_reference_path).

Legend: N rows, K cols, bn x bk block, SN = ceil(N / bn), SK = ceil(K / bk).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..formats import decode, e8m0, encode
from ..formats.scales import ue8m0_scale

HIF8_TOP = 15.0  # largest HiF8 value with 3 mantissa bits
BLOCK = (128, 128)
AMAX_FLOOR = HIF8_TOP * 2.0**-126  # all-zero blocks get a normal scale


def quantize_hif8_blocks(
    w: torch.Tensor, block: tuple[int, int] = BLOCK
) -> tuple[torch.Tensor, torch.Tensor]:
    """w [N, K] -> (codes uint8 [N, K], scale float8_e8m0fnu [SN, SK])."""
    if w.dim() != 2 or not w.is_floating_point():
        raise ValueError(
            f"quantize_hif8_blocks: expected a 2-D floating weight [N, K], got {w.dtype} {list(w.shape)}"
        )
    (n, k), (bn, bk) = w.shape, block
    sn, sk = math.ceil(n / bn), math.ceil(k / bk)
    wb = F.pad(w.float(), (0, sk * bk - k, 0, sn * bn - n)).view(sn, bn, sk, bk)
    amax = wb.abs().amax(dim=(1, 3)).clamp(min=AMAX_FLOOR)  # [SN, SK]
    scale = ue8m0_scale(amax, HIF8_TOP)  # uint8 e8m0 codes
    s = e8m0.decode(scale)  # exact powers of two, float32
    codes = encode(wb / s[:, None, :, None], "hif8", saturate=True).view(sn * bn, sk * bk)[:n, :k]
    return codes.contiguous(), scale.view(torch.float8_e8m0fnu)


def dequantize_hif8_blocks(
    codes: torch.Tensor,
    scale: torch.Tensor,
    dtype: torch.dtype = torch.float32,
    block: tuple[int, int] = BLOCK,
) -> torch.Tensor:
    """(codes uint8 [N, K], scale [SN, SK] float8_e8m0fnu) -> w [N, K] as dtype."""
    (n, k), (bn, bk) = codes.shape, block
    s = e8m0.decode(scale.view(torch.uint8))
    s_full = s.repeat_interleave(bn, dim=0).repeat_interleave(bk, dim=1)[:n, :k]
    return (decode(codes, "hif8") * s_full).to(dtype)
