"""FP8 E4M3FN against torch's own float8_e4m3fn cast; FP4 E2M1 against a brute-force search."""

from __future__ import annotations

import math

import torch

from trillion.formats import all_codes, decode, encode

from .reference import E2M1_MAGNITUDES, e2m1_nearest


def _torch_e4m3(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float8_e4m3fn).view(torch.uint8)


def test_e4m3_decode_matches_torch():
    codes = all_codes("e4m3")
    ref = codes.view(torch.float8_e4m3fn).float()
    ours = decode(codes, "e4m3")
    assert torch.equal(torch.isnan(ours), torch.isnan(ref))
    keep = ~torch.isnan(ref)
    assert torch.equal(ours[keep], ref[keep])
    assert ours[0x7E].item() == 448.0 and ours[0x01].item() == 2.0**-9 and ours[0x08].item() == 2.0**-6


def test_e4m3_encode_matches_torch_on_random_bit_patterns():
    # Every float32 bit pattern is equally likely: all binades, subnormals, Inf and NaN payloads.
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-(2**31), 2**31 - 1, (1 << 18,), dtype=torch.int32, generator=g).view(torch.float32)
    assert torch.equal(encode(x, "e4m3"), _torch_e4m3(x))


def test_e4m3_encode_matches_torch_on_ties_and_neighbours():
    v = decode(all_codes("e4m3"), "e4m3")
    v = torch.unique(v[torch.isfinite(v)])
    mid = (v[1:] + v[:-1]) / 2  # exact in float32: the grid has 4 significant bits
    x = torch.cat(
        [
            v,
            mid,
            torch.nextafter(mid, mid + 1),
            torch.nextafter(mid, mid - 1),
            torch.tensor([456.0, 464.0, 480.0, 1e6, math.inf, -math.inf, 2.0**-11, 2.0**-10]),
        ]
    )
    assert torch.equal(encode(x, "e4m3"), _torch_e4m3(x))
    for dtype in (torch.bfloat16, torch.float16):
        xd = x.to(dtype)
        assert torch.equal(encode(xd, "e4m3"), _torch_e4m3(xd))


def test_e4m3_saturates_and_keeps_nan():
    x = torch.tensor([500.0, -1e9, math.inf, -math.inf, math.nan, -0.0])
    assert encode(x, "e4m3").tolist() == [0x7E, 0xFE, 0x7E, 0xFE, 0x7F, 0x80]


def test_e2m1_code_layout():
    mags = torch.tensor(E2M1_MAGNITUDES)
    assert encode(mags, "e2m1").tolist() == list(range(8))
    assert encode(-mags[1:], "e2m1").tolist() == list(range(9, 16))
    assert decode(all_codes("e2m1"), "e2m1").tolist() == E2M1_MAGNITUDES + [-m for m in E2M1_MAGNITUDES]


def test_e2m1_encode_matches_brute_force():
    mags = torch.tensor(E2M1_MAGNITUDES)
    mid = (mags[1:] + mags[:-1]) / 2
    g = torch.Generator().manual_seed(1)
    pos = torch.cat(
        [
            mags,
            mid,
            torch.nextafter(mid, mid + 1),
            torch.nextafter(mid, mid - 1),
            torch.rand(20000, generator=g) * 8,
            torch.tensor([6.5, 7.0, 100.0, math.inf, 1e-30]),
        ]
    )
    x = torch.cat([pos, -pos])
    assert torch.equal(decode(encode(x, "e2m1"), "e2m1").double(), e2m1_nearest(x))


def test_e2m1_ties_go_to_even():
    x = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
    assert decode(encode(x, "e2m1"), "e2m1").tolist() == [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0]
