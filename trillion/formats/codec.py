"""One entry point for every element format: `encode(x, fmt) -> uint8 codes`, `decode(codes, fmt)`.

Codes are one torch.uint8 per element, also for the 4-bit e2m1 (packing two per byte is a storage
matter, see `trillion.formats.mx.pack_fp4`). A uint8 code tensor of an 8-bit format can be
reinterpreted as torch's own dtype with `codes.view(torch.float8_e4m3fn)` / `torch.float8_e8m0fnu`.

  fmt     encode rounding                          overflow
  e4m3    nearest, ties to even                    saturate to +-448 (Inf too); NaN -> 0x7F/0xFF
  e2m1    nearest, ties to even                    saturate to +-6 (Inf too); NaN raises
  e8m0    UP to the next power of two (scales)     > 2**127, Inf, NaN, negative -> 0xFF (NaN)
  hif8    nearest, ties away from zero             >= 1.25 * 2**15 -> +-Inf; with saturate +-2**15 (Inf too)
"""

from __future__ import annotations

import functools

import torch

from trillion.formats import e8m0, hif8, minifloat
from trillion.formats._bits import check_uint8

FORMATS = ("e4m3", "e8m0", "e2m1", "hif8")
_MINIFLOATS = {"e4m3": minifloat.E4M3, "e2m1": minifloat.E2M1}


def _check_fmt(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown number format {fmt!r}; expected one of {FORMATS}")


def encode(x: torch.Tensor, fmt: str, *, saturate: bool | None = None) -> torch.Tensor:
    """Round each element of x to the nearest value of `fmt` (see the table above); uint8 codes.

    `saturate` only chooses something for hif8 (default False: overflow becomes Inf). e4m3 and e2m1
    always saturate (True is accepted, False is refused); e8m0 has no such choice.
    """
    _check_fmt(fmt)
    if fmt == "hif8":
        return hif8.encode(x, saturate=bool(saturate))
    if saturate is not None and (fmt == "e8m0" or not saturate):
        raise ValueError(
            f"encode to {fmt}: saturate={saturate} is not available; only hif8 takes it "
            "(e4m3 and e2m1 always saturate, e8m0 rounds up to a power of two)"
        )
    if fmt == "e8m0":
        return e8m0.encode(x)
    return minifloat.encode(x, _MINIFLOATS[fmt])


def decode_fields(codes: torch.Tensor, fmt: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Decode by reading the bit fields of each code (what `decode` builds its tables with)."""
    _check_fmt(fmt)
    if fmt == "hif8":
        return hif8.decode(codes, dtype)
    if fmt == "e8m0":
        return e8m0.decode(codes, dtype)
    return minifloat.decode(codes, _MINIFLOATS[fmt], dtype)


@functools.lru_cache(maxsize=32)
def _table(fmt: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return decode_fields(all_codes(fmt, device), fmt, dtype)


def decode(codes: torch.Tensor, fmt: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 codes -> values of `fmt` as `dtype` (exact for float32; NaN codes give NaN).

    A lookup in a table of all the format's values: one gather instead of a dozen bit-field ops.
    """
    _check_fmt(fmt)
    c = check_uint8(codes, fmt)
    if fmt == "e2m1" and bool((c > 0x0F).any()):
        raise ValueError(f"decode from e2m1: codes are 4-bit, got a code of 0x{int(c.max()):02X}")
    work = torch.float64 if dtype == torch.float64 else torch.float32
    return _table(fmt, codes.device, work)[codes.long()].to(dtype)


def all_codes(fmt: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """Every code of `fmt` (16 for e2m1, 256 otherwise) as uint8, for tables and exhaustive tests."""
    _check_fmt(fmt)
    return torch.arange(16 if fmt == "e2m1" else 256, device=device).to(torch.uint8)
