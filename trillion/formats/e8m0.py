"""UE8M0 (torch.float8_e8m0fnu): an unsigned 8-bit exponent, value 2**(code - 127); 0xFF is NaN.

It has no sign, no mantissa and no zero: code 0 is 2**-127. It exists to be a scale (DeepSeek V3.1+
block scales, OCP MX scales), and scales are made by rounding UP to a power of two,
`2**ceil(log2(amax / elem_max))`, so that amax / scale never exceeds the element format's max.
Encoding therefore rounds up, not to nearest (torch's own cast rounds to nearest; do not mix them):

  x <= 2**-127 (also 0)  -> 0x00            2**-127 < x <= 2**127 -> ceil(log2 x) + 127
  x > 2**127, +Inf, NaN, x < 0 -> 0xFF (NaN: a scale cannot be negative or infinite)
"""

from __future__ import annotations

import torch

from trillion.formats._bits import as_work, check_uint8, pow2

NAN_CODE = 0xFF
EMIN, EMAX = -127, 127


def ceil_log2(a: torch.Tensor) -> torch.Tensor:
    """ceil(log2(a)) as int32 for finite a > 0, exactly: frexp's exponent, less one on a power of two.

    This is DeepSeek's `fast_log2_ceil` (exponent bits, plus one unless the mantissa is zero).
    """
    m, k = torch.frexp(a)
    return k - (m == 0.5).to(k.dtype)


def encode(x: torch.Tensor) -> torch.Tensor:
    xw = as_work(x, "e8m0")
    pos = xw > 0  # False for NaN, 0 and negatives
    e = ceil_log2(torch.where(pos & torch.isfinite(xw), xw, 1.0)).clamp(min=EMIN)
    bad = ~(xw >= 0) | torch.isinf(xw) | (e > EMAX)  # NaN, negative, Inf, too big
    code = torch.where(bad, NAN_CODE, torch.where(pos, e + 127, 0))
    return code.to(torch.uint8)


def decode(codes: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    c = check_uint8(codes, "e8m0")
    work = torch.float64 if dtype == torch.float64 else torch.float32
    v = pow2(c - 127, work)  # 2**-127 is a float32 subnormal, still exact
    return torch.where(c == NAN_CODE, float("nan"), v).to(dtype)
