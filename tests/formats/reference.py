"""Slow, obviously-correct references for the format tests: bit-field parsing and brute-force search.

Nothing here calls trillion.formats; every table is built from the format's written description.
"""

from __future__ import annotations

import math

import torch

E2M1_MAGNITUDES = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]  # code = magnitude index, sign in bit 3


def e2m1_nearest(x: torch.Tensor) -> torch.Tensor:
    """Brute force: the nearest E2M1 value to each x (saturating), ties to the even magnitude index."""
    mags = torch.tensor(E2M1_MAGNITUDES, dtype=torch.float64)
    a = x.double().abs().clamp(max=6.0)
    d = (a[..., None] - mags).abs()  # [..., 8]
    tie = d == d.min(dim=-1, keepdim=True).values
    # Among equally near values (at most two) prefer an even index: the mantissa bit is the code's LSB.
    score = tie.double() * 2 + (torch.arange(8) % 2 == 0).double()
    v = mags[score.argmax(dim=-1)]
    return torch.where(torch.signbit(x), -v, v)


def hif8_value(code: int) -> float:
    """Decode one HiF8 code by reading its bit fields as a string, per the reference table."""
    bits = f"{code:08b}"
    sign = -1.0 if bits[0] == "1" else 1.0
    rest = bits[1:]
    if code == 0x80:
        return math.nan
    if rest == "1101111":  # the E = 15, M = 1 pattern
        return sign * math.inf
    for dot, d, mbits in (("11", 4, 1), ("10", 3, 2), ("01", 2, 3), ("001", 1, 3), ("0001", 0, 3)):
        if rest.startswith(dot):
            exp_bits, man_bits = rest[len(dot) : len(dot) + d], rest[len(dot) + d :]
            assert len(man_bits) == mbits
            if d == 0:
                e = 0
            else:
                magnitude = int("1" + exp_bits[1:], 2)  # implicit leading 1 on the magnitude
                e = -magnitude if exp_bits[0] == "1" else magnitude
            return sign * 2.0**e * (1 + int(man_bits, 2) / 2**mbits)
    m = int(rest[4:], 2)  # dot 0000: denormal
    return 0.0 if m == 0 else sign * 2.0 ** (m - 23)


HIF8_TABLE = [hif8_value(c) for c in range(256)]
HIF8_INF_STANDIN = 1.5 * 2.0**15  # what the Inf pattern would mean as a number: rounding's upper neighbour


def hif8_nearest(x: torch.Tensor, saturate: bool = False) -> torch.Tensor:
    """Brute force: nearest HiF8 value, ties away from zero; the Inf pattern competes as 1.5 * 2**15."""
    finite = sorted({abs(v) for v in HIF8_TABLE if math.isfinite(v)})
    cand = torch.tensor([*finite, HIF8_INF_STANDIN], dtype=torch.float64)
    a = x.double().abs()
    d = (a[..., None] - cand).abs()
    tie = d == d.min(dim=-1, keepdim=True).values
    v = torch.where(tie, cand, -1.0).max(dim=-1).values  # the larger of two equally near: away from 0
    v = torch.where(v == HIF8_INF_STANDIN, 2.0**15 if saturate else math.inf, v)
    v = torch.where(torch.isinf(a), 2.0**15 if saturate else math.inf, v)  # saturation is SATFINITE-like
    v = torch.where(torch.signbit(x) & (v != 0), -v, v)
    return torch.where(torch.isnan(x), math.nan, v)


def bracket(grid: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Neighbours lo <= x <= hi in a sorted float64 grid (x inside the grid's range)."""
    xd = x.double()
    hi_i = torch.searchsorted(grid, xd).clamp(max=len(grid) - 1)
    lo_i = torch.searchsorted(grid, xd, right=True).sub(1).clamp(min=0)
    return grid[lo_i], grid[hi_i]
