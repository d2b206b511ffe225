"""The codec API across all formats: exact round trips, half-ULP rounding, argument errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trillion.formats import FORMATS, all_codes, decode, encode

from .reference import bracket

MAX = {"e4m3": 448.0, "e2m1": 6.0, "hif8": 2.0**15}


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_code_round_trips_exactly(fmt):
    codes = all_codes(fmt)
    values = decode(codes, fmt)
    keep = ~torch.isnan(values)
    again = encode(values[keep], fmt)
    assert torch.equal(decode(again, fmt), values[keep])
    assert torch.equal(again, codes[keep])  # also +-0 of e4m3 / e2m1 and +-Inf of hif8


@pytest.mark.parametrize("fmt", FORMATS)
def test_nan_codes(fmt):
    nan_codes = {"e4m3": [0x7F, 0xFF], "e8m0": [0xFF], "e2m1": [], "hif8": [0x80]}[fmt]
    values = decode(all_codes(fmt), fmt)
    assert torch.isnan(values).nonzero().flatten().tolist() == nan_codes


def _grid(fmt: str) -> torch.Tensor:
    v = decode(all_codes(fmt), fmt, torch.float64)
    return torch.unique(v[torch.isfinite(v)])  # sorted


@pytest.mark.parametrize("fmt", ["e4m3", "e2m1", "hif8"])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_rounding_error_is_at_most_half_an_ulp(fmt, data):
    m = MAX[fmt]
    xs = data.draw(st.lists(st.floats(-m, m, width=32), min_size=1, max_size=64))
    x = torch.tensor(xs, dtype=torch.float32)
    y = decode(encode(x, fmt), fmt, torch.float64)
    lo, hi = bracket(_grid(fmt), x)
    assert bool(((y == lo) | (y == hi)).all()), "the result must be a neighbour of x"
    assert bool(((y - x.double()).abs() <= (hi - lo) / 2).all())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(2.0**-126, 2.0**127, width=32), min_size=1, max_size=64))
def test_e8m0_encode_is_the_smallest_power_of_two_not_below_x(xs):
    x = torch.tensor(xs, dtype=torch.float32)
    s = decode(encode(x, "e8m0"), "e8m0", torch.float64)
    assert bool((s >= x.double()).all()) and bool((s / 2 < x.double()).all())
    assert bool((torch.log2(s) == torch.log2(s).round()).all())


def test_decode_dtypes():
    codes = all_codes("e4m3")
    for dtype in (torch.bfloat16, torch.float16, torch.float64):
        out = decode(codes, "e4m3", dtype)
        assert out.dtype == dtype
        assert torch.equal(out[:126].float(), decode(codes, "e4m3")[:126])  # all fit in 16-bit floats


def test_float64_input_is_rounded_once():
    # Just above the 1 / 1.125 midpoint: float32 would land on the midpoint and tie to even (1.0).
    x = torch.tensor([1.0625 + 2.0**-40], dtype=torch.float64)
    assert decode(encode(x, "e4m3"), "e4m3").item() == 1.125
    assert decode(encode(x.float(), "e4m3"), "e4m3").item() == 1.0


def test_16_bit_inputs_match_float32_inputs():
    x = torch.randn(4096) * 100
    for fmt in ("e4m3", "hif8", "e2m1"):
        for dtype in (torch.bfloat16, torch.float16):
            assert torch.equal(encode(x.to(dtype), fmt), encode(x.to(dtype).float(), fmt))


def test_errors_name_the_problem():
    x = torch.ones(3)
    with pytest.raises(ValueError, match="'e5m2'"):
        encode(x, "e5m2")
    with pytest.raises(ValueError, match="'nvfp4'"):
        decode(torch.zeros(3, dtype=torch.uint8), "nvfp4")
    with pytest.raises(ValueError, match=r"e4m3.*saturate=False"):
        encode(x, "e4m3", saturate=False)
    with pytest.raises(ValueError, match="e8m0"):
        encode(x, "e8m0", saturate=True)
    with pytest.raises(ValueError, match=r"e2m1.*no NaN.*1 NaN"):
        encode(torch.tensor([1.0, math.nan]), "e2m1")
    with pytest.raises(TypeError, match=r"hif8.*uint8.*int8"):
        decode(torch.zeros(3, dtype=torch.int8), "hif8")
    with pytest.raises(TypeError, match=r"e4m3.*floating-point.*int64"):
        encode(torch.ones(3, dtype=torch.int64), "e4m3")
    with pytest.raises(ValueError, match=r"e2m1.*4-bit.*0x10"):
        decode(torch.tensor([16], dtype=torch.uint8), "e2m1")


def test_encode_keeps_shape_and_device():
    x = torch.randn(2, 3, 5)
    for fmt in FORMATS:
        c = encode(x.abs() if fmt == "e8m0" else x, fmt)
        assert c.shape == x.shape and c.dtype == torch.uint8
