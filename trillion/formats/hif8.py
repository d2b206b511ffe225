"""HiFloat8 (Huawei Ascend HiF8, arXiv 2409.16626): a tapered 8-bit float whose exponent width varies.

Layout, most significant bit first: sign | dot | exponent | mantissa. The dot field is a prefix code
for the exponent width D; the exponent is sign-magnitude with an implicit leading 1 on the magnitude
(first bit = exponent sign, then the D-1 bits below the leading 1).

  dot    D  mbits  |E|        code without its sign bit
  11     4  1      8..15      0x60 | Es<<4 | (|E|-8)<<1 | M
  10     3  2      4..7       0x40 | Es<<4 | (|E|-4)<<2 | M
  01     2  3      2..3       0x20 | Es<<4 | (|E|-2)<<3 | M
  001    1  3      1          0x10 | Es<<3 | M
  0001   0  3      0          0x08 | M
  0000   denormal: low 3 bits m = 1..7, value 2**(m - 23)

  normal value (-1)^S * 2**E * (1 + M / 2**mbits); 0x00 zero (the only one), 0x80 NaN,
  0x6F / 0xEF +-Inf (the E=15, M=1 pattern). Finite range 2**-22 .. 2**15.

Encoding rounds to the nearest representable value, ties away from zero (the HiF8 paper's TA
rounding). The value spacing changes with the exponent width (and in the denormal range only powers
of two exist), so rather than rounding a mantissa per case, encode binary-searches |x| among the
midpoints of the sorted values; the table comes from decode, so the two cannot disagree.
From 1.25 * 2**15 (half-way to the E=15, M=1 pattern) values become Inf; with saturate they, and
+-Inf itself, become +-2**15 (like CUDA's SATFINITE conversions).
Codes are not ordered like values: decode before comparing.

Legend: S sign, E exponent, M mantissa field, D exponent width, a = |x|.
"""

from __future__ import annotations

import functools

import torch

from trillion.formats._bits import as_work, check_uint8, pow2

NAN_CODE, INF_CODE, MAX_CODE = 0x80, 0x6F, 0x6E
MAX = 2.0**15


@functools.lru_cache(maxsize=16)
def _rounding_table(
    device: torch.device, dtype: torch.dtype, saturate: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(midpoints [127], codes [128]) of the non-negative values in increasing order.

    The Inf pattern takes part as the number it would be (E=15, M=1: 1.5 * 2**15), so the midpoint
    below it is the overflow threshold 1.25 * 2**15. Midpoints of 4-bit significands are exact.
    """
    codes = torch.tensor([c for c in range(0x80) if c != INF_CODE], device=device).to(torch.uint8)
    values, order = decode(codes, dtype).sort()
    values = torch.cat([values, torch.tensor([1.5 * MAX], dtype=dtype, device=device)])
    top = torch.tensor([MAX_CODE if saturate else INF_CODE], dtype=torch.int32, device=device)
    return (values[1:] + values[:-1]) / 2, torch.cat([codes[order].to(torch.int32), top])


def encode(x: torch.Tensor, saturate: bool = False) -> torch.Tensor:
    """Nearest value by binary search over the sorted midpoints; a tie counts as above (away from 0)."""
    xw = as_work(x, "hif8")
    mids, codes = _rounding_table(xw.device, xw.dtype, saturate)
    nan = torch.isnan(xw)
    a = torch.where(nan, 0.0, xw.abs())  # +-Inf lands past the last midpoint: the top code
    code = codes[torch.bucketize(a, mids, right=True)]  # right=True: a == mid goes to the upper value
    code = code | ((torch.signbit(xw) & (code != 0)).to(torch.int32) << 7)  # -0 is 0x00: one zero
    code = torch.where(nan, NAN_CODE, code)
    return code.to(torch.uint8)


def decode(codes: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    c = check_uint8(codes, "hif8")
    mag = c & 0x7F
    # Read the dot prefix from the top of the 7 magnitude bits; -1 marks the denormal prefix 0000.
    d = torch.full_like(mag, -1)
    for bound, width in ((0x08, 0), (0x10, 1), (0x20, 2), (0x40, 3), (0x60, 4)):
        d = torch.where(mag >= bound, width, d)
    mb = torch.tensor([0, 3, 3, 3, 2, 1], dtype=torch.int32, device=c.device)[d + 1]
    man = mag & ((1 << mb) - 1)
    dm1 = (d - 1).clamp(min=0)
    field = (mag >> mb) & ((1 << d.clamp(min=0)) - 1)
    e_mag = torch.where(d > 0, (1 << dm1) + (field & ((1 << dm1) - 1)), 0)
    e = torch.where((d > 0) & ((field >> dm1) & 1).bool(), -e_mag, e_mag)

    work = torch.float64 if dtype == torch.float64 else torch.float32
    v = (man + (1 << mb)).to(work) * pow2(e - mb, work)
    v = torch.where(d < 0, pow2(mag - 23, work), v)  # denormal 2**(m - 23)
    v = torch.where(mag == 0, 0.0, v)
    v = torch.where(mag == INF_CODE, float("inf"), v)
    v = torch.where(c >= 0x80, -v, v)
    v = torch.where(c == NAN_CODE, float("nan"), v)
    return v.to(dtype)
