"""Power-of-two (UE8M0) block scales, and the input checks every block quantiser shares.

Two rules make a UE8M0 scale from a block's absolute maximum amax:
  "ceil"  (DeepSeek, V3.1+ and V4): s = 2**ceil(log2(amax / elem_max)), so |x| / s <= elem_max and
          nothing is clipped (the smallest such power of two).
  "floor" (OCP Microscaling spec v1.0, section 6.3): s = 2**(floor(log2 amax) - emax_elem), where
          emax_elem = floor(log2 elem_max); the block's largest values may saturate (up to ~1.75x).
"""

from __future__ import annotations

import torch

from trillion.formats import e8m0
from trillion.formats._bits import floor_log2

SCALE_RULES = ("ceil", "floor")


def ue8m0_scale(amax: torch.Tensor, elem_max: float, rule: str = "ceil") -> torch.Tensor:
    """amax (> 0, float) -> UE8M0 codes (uint8) of the block scales, same shape."""
    if rule == "ceil":
        return e8m0.encode(amax.float() / elem_max)
    if rule == "floor":
        emax_elem = int(torch.tensor(elem_max).log2().floor())
        e = (floor_log2(amax.float()) - emax_elem).clamp(e8m0.EMIN, e8m0.EMAX)
        return (e + 127).to(torch.uint8)
    raise ValueError(f"unknown UE8M0 scale rule {rule!r}; expected one of {SCALE_RULES}")


def check_finite(x: torch.Tensor, who: str, name: str) -> None:
    """Block scales come from amax: one NaN or Inf poisons a whole block, so refuse it loudly."""
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        n_nan = int(torch.isnan(x).sum())
        raise ValueError(
            f"{who}: {name} {list(x.shape)} holds {n_nan} NaN and {int(bad.sum()) - n_nan} "
            "Inf values; block scales need finite input"
        )


def check_float(x: torch.Tensor, who: str, name: str) -> None:
    if not x.is_floating_point():
        raise TypeError(f"{who}: {name} must be a floating-point tensor, got dtype {x.dtype}")


def scale_values(scale: torch.Tensor, who: str) -> torch.Tensor:
    """Block scales as float32: decode a torch.float8_e8m0fnu tensor, pass a float one through."""
    if scale.dtype == torch.float8_e8m0fnu:
        return e8m0.decode(scale.view(torch.uint8))
    if scale.is_floating_point() and scale.element_size() >= 2:
        return scale.float()
    raise TypeError(f"{who}: scale must be torch.float8_e8m0fnu or a float tensor, got dtype {scale.dtype}")
