"""UE8M0 against torch's float8_e8m0fnu; encode rounds UP to a power of two (how scales are made)."""

from __future__ import annotations

import math

import torch

from trillion.formats import all_codes, decode, encode


def test_decode_matches_torch():
    codes = all_codes("e8m0")
    ref = codes.view(torch.float8_e8m0fnu).float()
    ours = decode(codes, "e8m0")
    assert torch.isnan(ours).nonzero().flatten().tolist() == [0xFF]
    assert torch.equal(ours[:255], ref[:255])
    assert ours[0].item() == 2.0**-127 and ours[127].item() == 1.0 and ours[254].item() == 2.0**127


def test_encode_powers_of_two_matches_torch():
    x = decode(all_codes("e8m0")[:255], "e8m0")
    assert torch.equal(encode(x, "e8m0"), x.to(torch.float8_e8m0fnu).view(torch.uint8))


def test_encode_rounds_up_like_torch_cast_of_the_next_power_of_two():
    g = torch.Generator().manual_seed(0)
    x = torch.exp2(torch.rand(5000, generator=g) * 250 - 125)
    up = [2.0 ** math.ceil(math.log2(v)) if math.frexp(v)[0] != 0.5 else v for v in x.double().tolist()]
    ref = torch.tensor(up, dtype=torch.float32).to(torch.float8_e8m0fnu).view(torch.uint8)
    assert torch.equal(encode(x, "e8m0"), ref)


def test_encode_edges():
    x = torch.tensor(
        [0.0, 1e-45, 2.0**-127, 1.0, 1.0000001, 0.75, 2.0**127, 2.0**127 * 1.01, math.inf, -1.0, math.nan]
    )
    assert encode(x, "e8m0").tolist() == [0, 0, 0, 127, 128, 127, 254, 255, 255, 255, 255]
