"""HiF8 against a table built independently from the bit layout, and a brute-force nearest search."""

from __future__ import annotations

import math

import torch

from trillion.formats import all_codes, decode, encode

from .reference import HIF8_TABLE, hif8_nearest


def test_decode_matches_bit_field_table():
    ours = decode(all_codes("hif8"), "hif8", torch.float64)
    ref = torch.tensor(HIF8_TABLE, dtype=torch.float64)
    assert torch.equal(torch.isnan(ours), torch.isnan(ref))
    keep = ~torch.isnan(ref)
    assert torch.equal(ours[keep], ref[keep])


def test_known_codes():
    codes = torch.tensor(
        [0x00, 0x80, 0x6F, 0xEF, 0x6E, 0x01, 0x07, 0x08, 0x0F, 0x18, 0x7E], dtype=torch.uint8
    )
    v = decode(codes, "hif8", torch.float64).tolist()
    assert v[0] == 0 and math.isnan(v[1]) and v[2] == math.inf and v[3] == -math.inf
    assert v[4:] == [2.0**15, 2.0**-22, 2.0**-16, 1.0, 1.875, 0.5, 2.0**-15]


def test_the_value_set():
    v = torch.tensor(HIF8_TABLE)
    finite = v[torch.isfinite(v)]
    assert len(torch.unique(finite)) == 253  # 256 - NaN - two Inf, one zero
    assert finite.abs().max() == 2.0**15 and finite.abs()[finite != 0].min() == 2.0**-22


def _probe_values() -> torch.Tensor:
    v = torch.tensor(sorted({abs(x) for x in HIF8_TABLE if math.isfinite(x)} | {1.5 * 2.0**15}))
    mid = (v[1:] + v[:-1]) / 2
    g = torch.Generator().manual_seed(0)
    rnd = torch.exp2(torch.rand(20000, generator=g) * 44 - 27)  # 2**-27 .. 2**17, log-uniform
    extra = torch.tensor([2.0**-23, 2.0**-24, 1e-40, 40960.0, 40959.996, 1e6, math.inf, 0.0])
    pos = torch.cat([v, mid, torch.nextafter(mid, mid + 1), torch.nextafter(mid, mid - 1), rnd, extra])
    return torch.cat([pos, -pos])


def test_encode_is_nearest_with_ties_away_from_zero():
    x = _probe_values()
    for saturate in (False, True):
        got = decode(encode(x, "hif8", saturate=saturate), "hif8", torch.float64)
        assert torch.equal(got, hif8_nearest(x, saturate=saturate)), f"saturate={saturate}"


def test_ties_round_away_from_zero():
    x = torch.tensor([1.0625, 2.0**-20 * 1.5, 2.0**-23, -(2.0**8) * 1.25, 1.25 * 2.0**15])
    assert decode(encode(x, "hif8"), "hif8").tolist() == [
        1.125,
        2.0**-19,
        2.0**-22,
        -(2.0**8) * 1.5,
        math.inf,
    ]


def test_specials():
    x = torch.tensor([0.0, -0.0, math.nan, math.inf, -math.inf, 40960.0, -40960.0, 40959.99])
    assert encode(x, "hif8").tolist() == [0x00, 0x00, 0x80, 0x6F, 0xEF, 0x6F, 0xEF, 0x6E]
    assert encode(x, "hif8", saturate=True).tolist() == [0x00, 0x00, 0x80, 0x6E, 0xEE, 0x6E, 0xEE, 0x6E]
