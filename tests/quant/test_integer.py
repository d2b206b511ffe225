"""INT8 per-channel and INT4 per-group weight quantisers (trillion.quant.integer)."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trillion.quant.integer import (
    INT4_OFFSET,
    bf16_scale,
    dequantize_int4,
    dequantize_int8,
    pack_int4,
    quantize_int4,
    quantize_int8,
    unpack_int4,
)


def _weights(seed: int, n: int, k: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # rows of very different magnitude, and a zero row
    w = torch.randn(n, k, generator=g) * torch.exp2(torch.randint(-20, 8, (n, 1), generator=g).float())
    w[0] = 0
    return w


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 9), k=st.integers(1, 40))
def test_int8_error_is_at_most_half_a_step(seed, n, k):
    w = _weights(seed, n, k)
    q, s = quantize_int8(w)
    assert q.dtype == torch.int8 and s.dtype == torch.bfloat16 and s.shape == (n,)
    assert int(q.abs().max()) <= 127
    err = (dequantize_int8(q, s) - w).abs()
    assert bool((err <= s.float()[:, None] / 2).all())


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1), n=st.integers(1, 6), groups=st.integers(1, 3), g=st.sampled_from([32, 64])
)
def test_int4_error_is_at_most_half_a_step(seed, n, groups, g):
    w = _weights(seed, n, groups * g)
    packed, s = quantize_int4(w, g)
    assert packed.dtype == torch.uint8 and packed.shape == (n, groups * g // 2) and s.shape == (n, groups)
    codes = unpack_int4(packed)
    assert int(codes.min()) >= INT4_OFFSET - 7 and int(codes.max()) <= INT4_OFFSET + 7
    err = (dequantize_int4(packed, s) - w).abs()
    assert bool((err <= s.float().repeat_interleave(g, dim=1) / 2).all())


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_representable_weights_round_trip_exactly(seed):
    g = torch.Generator().manual_seed(seed)
    s8 = bf16_scale(torch.rand(5, generator=g) + 0.1, 127)
    q8 = torch.randint(-127, 128, (5, 20), generator=g, dtype=torch.int8)
    q8[:, 0] = 127  # the row maximum pins the scale
    w8 = dequantize_int8(q8, s8)
    q, s = quantize_int8(w8)
    assert torch.equal(q, q8) and torch.equal(s, s8)

    s4 = bf16_scale(torch.rand(3, 2, generator=g) + 0.1, 7)
    codes = torch.randint(1, 16, (3, 64), generator=g, dtype=torch.uint8)
    codes[:, 0] = codes[:, 32] = 15
    w4 = dequantize_int4(pack_int4(codes), s4)
    packed, s = quantize_int4(w4, 32)
    assert torch.equal(unpack_int4(packed), codes) and torch.equal(s, s4)


def test_scales_round_up_to_bfloat16():
    amax = torch.tensor([1.0, 1.0 + 2**-10, 3.0, 0.0])
    s = bf16_scale(amax, 127)
    assert s.dtype == torch.bfloat16
    assert bool((s.float() >= (amax / 127).clamp(min=2**-126)).all())
    # and it is the smallest such bf16: one step down is too small (where the floor does not bind)
    below = (s[:3].view(torch.int16) - 1).view(torch.bfloat16).float()
    assert bool((below < amax[:3] / 127).all())


def test_int4_packing_is_low_nibble_first():
    codes = torch.tensor([[1, 2, 3, 4]], dtype=torch.uint8)
    assert pack_int4(codes).tolist() == [[0x21, 0x43]]
    assert torch.equal(unpack_int4(pack_int4(codes)), codes)


def test_int4_refuses_widths_not_divisible_by_the_group():
    try:
        quantize_int4(torch.randn(4, 48), 32)
    except ValueError as e:
        assert "48" in str(e) and "32" in str(e)
    else:
        raise AssertionError("expected a ValueError")
