"""Small exact helpers the format modules share: powers of two, binade exponents, working dtype.

Every codec here works on magnitudes in a float dtype wide enough to hold the input exactly
(float32 for 8/16/32-bit inputs, float64 for float64), so that scaling by a power of two and
splitting into exponent and mantissa never rounds.
"""

from __future__ import annotations

import torch


def work_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 for float64 input (casting it to float32 first would round twice), else float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def as_work(x: torch.Tensor, fmt: str) -> torch.Tensor:
    if not (x.is_floating_point()):
        raise TypeError(f"encode to {fmt}: expected a floating-point tensor, got dtype {x.dtype}")
    return x.to(work_dtype(x))


def pow2(e: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """2**e exactly, for an integer tensor e (ldexp multiplies by an exact power of two)."""
    return torch.ldexp(torch.ones(e.shape, dtype=dtype, device=e.device), e)


def floor_log2(a: torch.Tensor) -> torch.Tensor:
    """floor(log2(a)) as int32 for finite a > 0, exactly (frexp gives a = m * 2**k, m in [0.5, 1)).

    a == 0 gives -1; callers clamp or mask it.
    """
    return torch.frexp(a).exponent - 1


def round_half_away(u: torch.Tensor) -> torch.Tensor:
    """Round u >= 0 to an integer, ties up. floor(u + 0.5) could round in the add; this cannot."""
    f = torch.floor(u)
    return f + (u - f >= 0.5).to(u.dtype)


def check_uint8(codes: torch.Tensor, fmt: str) -> torch.Tensor:
    if codes.dtype != torch.uint8:
        raise TypeError(f"decode from {fmt}: expected codes as a torch.uint8 tensor, got dtype {codes.dtype}")
    return codes.to(torch.int32)
