"""IEEE-like small floats with a sign, an exponent field and a mantissa field: FP8 E4M3FN, FP4 E2M1.

Layout (most significant bit first): sign | exponent field (ebits, biased) | mantissa (mbits).
  field f > 0: value (-1)^s * 2**(f - bias) * (1 + man / 2**mbits)     (normal)
  field f = 0: value (-1)^s * 2**(1 - bias) * (man / 2**mbits)         (subnormal, same step as f = 1)

  E4M3FN (torch.float8_e4m3fn): ebits 4, mbits 3, bias 7, max 448, no Inf, 0x7F / 0xFF are NaN.
  E2M1  (OCP FP4): ebits 2, mbits 1, bias 1, max 6, magnitudes {0, .5, 1, 1.5, 2, 3, 4, 6}, no NaN.

Encoding rounds to nearest, ties to even, and saturates at +-max (Inf too), because that is what
DeepSeek's quantisers do: `clamp(x / s, -448, 448)` then cast. torch's own float8_e4m3fn cast
behaves the same way, which the tests use as the reference.

Legend: a = |x|, e = unbiased binade exponent, u = a in units of the binade's step (an integer
after rounding), code_mag = code without its sign bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trillion.formats._bits import as_work, check_uint8, floor_log2, pow2


@dataclass(frozen=True)
class Minifloat:
    name: str
    ebits: int
    mbits: int
    bias: int
    max: float
    nan_mag: int | None  # code_mag that means NaN, None when the format has no NaN

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal binade; subnormals use the same step."""
        return 1 - self.bias

    @property
    def sign_shift(self) -> int:
        return self.ebits + self.mbits


E4M3 = Minifloat("e4m3", ebits=4, mbits=3, bias=7, max=448.0, nan_mag=0x7F)
E2M1 = Minifloat("e2m1", ebits=2, mbits=1, bias=1, max=6.0, nan_mag=None)


def encode(x: torch.Tensor, spec: Minifloat) -> torch.Tensor:
    """x (any shape, float) -> uint8 codes of the same shape; RNE, saturating."""
    xw = as_work(x, spec.name)
    nan = torch.isnan(xw)
    if spec.nan_mag is None and bool(nan.any()):
        raise ValueError(
            f"encode to {spec.name}: the format has no NaN, but x {list(x.shape)} "
            f"holds {int(nan.sum())} NaN values"
        )
    a = torch.where(nan, 0.0, xw.abs()).clamp(max=spec.max)  # saturate before rounding: max is on the grid
    # Below 2**emin the step stops shrinking (subnormals), hence the clamp on e.
    e = torch.where(a > 0, floor_log2(a), spec.emin).clamp(min=spec.emin)
    u = torch.round(a * pow2(spec.mbits - e, a.dtype))  # torch.round is half-to-even; the scaling is exact
    # Normal: code_mag = (e + bias) << mbits | (u - 2**mbits) = (e - emin) << mbits + u.
    # Subnormal: e == emin and u < 2**mbits, so the same formula gives field 0 and man = u.
    # A carry (u == 2**(mbits+1)) lands on the next binade's code, which is the right value.
    code_mag = ((e - spec.emin) << spec.mbits) + u.to(torch.int32)
    if spec.nan_mag is not None:
        code_mag = torch.where(nan, spec.nan_mag, code_mag)
    code = code_mag | (torch.signbit(xw).to(torch.int32) << spec.sign_shift)
    return code.to(torch.uint8)


def decode(codes: torch.Tensor, spec: Minifloat, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    c = check_uint8(codes, spec.name)
    if spec.sign_shift < 7 and bool((c >> (spec.sign_shift + 1)).any()):
        raise ValueError(
            f"decode from {spec.name}: codes are {spec.sign_shift + 1}-bit, "
            f"got a code of 0x{int(c.max()):02X}"
        )
    code_mag = c & ((1 << spec.sign_shift) - 1)
    field = code_mag >> spec.mbits
    man = code_mag & ((1 << spec.mbits) - 1)
    u = torch.where(field == 0, man, man + (1 << spec.mbits))  # implicit leading 1 on normals only
    e = field.clamp(min=1) - spec.bias
    work = torch.float64 if dtype == torch.float64 else torch.float32
    v = u.to(work) * pow2(e - spec.mbits, work)
    if spec.nan_mag is not None:
        v = torch.where(code_mag == spec.nan_mag, float("nan"), v)
    v = torch.where((c >> spec.sign_shift).bool(), -v, v)  # after NaN, so 0xFF decodes to -NaN
    return v.to(dtype)
