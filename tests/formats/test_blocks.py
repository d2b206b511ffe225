"""DeepSeek's weight block quantisers: FP8 per 128 x 128 with UE8M0 scales, MXFP4 per 32 along K."""

from __future__ import annotations

import math

import pytest
import torch

from trillion.formats import (
    dequantize_fp4_blocks,
    dequantize_fp8_blocks,
    quantize_fp4_blocks,
    quantize_fp8_blocks,
)

from .reference import e2m1_nearest


def _ref_fp8_blocks(w: torch.Tensor, bn: int = 128, bk: int = 128):
    """Per-block loop with Python math for the scale and torch's own cast for the elements."""
    N, K = w.shape
    q = torch.empty(N, K, dtype=torch.float8_e4m3fn)
    s = torch.empty(math.ceil(N / bn), math.ceil(K / bk))
    for i in range(s.shape[0]):
        for j in range(s.shape[1]):
            blk = w[i * bn : (i + 1) * bn, j * bk : (j + 1) * bk].float()
            amax = max(blk.abs().max().item(), 1e-4)
            s[i, j] = 2.0 ** math.ceil(math.log2(amax / 448))
            q[i * bn : (i + 1) * bn, j * bk : (j + 1) * bk] = (blk / s[i, j]).to(torch.float8_e4m3fn)
    return q, s


def _random_weight(n: int, k: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # Blocks of very different magnitude, so the scales differ from block to block.
    return torch.randn(n, k, generator=g) * torch.exp2(torch.randint(-12, 6, (n, 1), generator=g).float())


def test_fp8_blocks_match_a_per_block_reference_with_partial_edges():
    w = _random_weight(300, 200)  # 128x128 blocks: 3 x 2, the last row and column blocks partial
    q, s = quantize_fp8_blocks(w)
    assert q.dtype == torch.float8_e4m3fn and q.shape == (300, 200)
    assert s.dtype == torch.float8_e8m0fnu and s.shape == (3, 2)
    q_ref, s_ref = _ref_fp8_blocks(w)
    assert torch.equal(q.view(torch.uint8), q_ref.view(torch.uint8))
    assert torch.equal(s.float(), s_ref)


def test_fp8_scales_are_the_smallest_sufficient_powers_of_two():
    w = _random_weight(256, 384, seed=1)
    _, s = quantize_fp8_blocks(w)
    s = s.float()
    amax = w.view(2, 128, 3, 128).abs().amax(dim=(1, 3))
    assert torch.equal(torch.log2(s), torch.log2(s).round())
    assert bool((amax / s <= 448).all()) and bool((amax / (s / 2) > 448).all())


def _half_ulp_bound(w: torch.Tensor, s: torch.Tensor, bn: int = 128, bk: int = 128) -> torch.Tensor:
    """E4M3 half-ULP, scaled: 2**-4 relative in the normal range, 2**-10 times the scale below it."""
    s_full = s.float().repeat_interleave(bn, 0).repeat_interleave(bk, 1)[: w.shape[0], : w.shape[1]]
    return torch.maximum(w.float().abs() * 2.0**-4, s_full * 2.0**-10)


def test_fp8_dequantize_error_is_within_half_an_ulp():
    w = _random_weight(300, 200, seed=2)
    q, s = quantize_fp8_blocks(w)
    w2 = dequantize_fp8_blocks(q, s)
    assert bool(((w2 - w).abs() <= _half_ulp_bound(w, s)).all())
    assert torch.equal(dequantize_fp8_blocks(q, s.float()), w2)  # float32 scales give the same
    assert dequantize_fp8_blocks(q, s, torch.bfloat16).dtype == torch.bfloat16


def test_fp8_partial_edge_block_scale_covers_only_the_partial_block():
    w = torch.full((130, 130), 0.01)
    w[129, 129] = 3.5  # alone in the bottom-right 2x2 block
    q, s = quantize_fp8_blocks(w)
    assert s.float().tolist() == [[2.0**-15, 2.0**-15], [2.0**-15, 2.0**-7]]
    assert dequantize_fp8_blocks(q, s)[129, 129].item() == 3.5


def test_fp8_all_zero_weight():
    q, s = quantize_fp8_blocks(torch.zeros(64, 64))
    assert s.float().item() == 2.0**-22 and not bool(q.float().any())  # amax floored at 1e-4
    assert not bool(dequantize_fp8_blocks(q, s).any())


def test_fp8_float32_scales_are_amax_over_448():
    w = _random_weight(200, 130, seed=3)
    q, s = quantize_fp8_blocks(w, scale_fmt=None)
    assert s.dtype == torch.float32 and s.shape == (2, 2)
    amax = torch.nn.functional.pad(w, (0, 126, 0, 56)).view(2, 128, 2, 128).abs().amax(dim=(1, 3))
    assert torch.equal(s, amax / 448)
    assert bool(((dequantize_fp8_blocks(q, s) - w).abs() <= _half_ulp_bound(w, s)).all())


def test_fp8_custom_block_and_bf16_input():
    w = _random_weight(96, 64, seed=4).bfloat16()
    q, s = quantize_fp8_blocks(w, block=(32, 16))
    assert s.shape == (3, 4)
    w2 = dequantize_fp8_blocks(q, s, torch.bfloat16, block=(32, 16))
    assert w2.dtype == torch.bfloat16
    # Compare in float32: the bf16 output adds its own rounding (2**-9 relative) on top.
    err = (dequantize_fp8_blocks(q, s, block=(32, 16)) - w.float()).abs()
    assert bool((err <= _half_ulp_bound(w, s, 32, 16)).all())


@pytest.mark.parametrize("bad, word", [(math.nan, "1 NaN"), (math.inf, "1 Inf"), (-math.inf, "1 Inf")])
def test_block_quantisers_refuse_nan_and_inf(bad, word):
    w = torch.ones(4, 64)
    w[2, 3] = bad
    with pytest.raises(ValueError, match=rf"quantize_fp8_blocks: w \[4, 64\] holds .*{word}"):
        quantize_fp8_blocks(w)
    with pytest.raises(ValueError, match=rf"\[4, 64\] holds .*{word}"):
        quantize_fp4_blocks(w)


def test_fp8_shape_errors():
    with pytest.raises(ValueError, match=r"2-D.*\[2, 3, 4\]"):
        quantize_fp8_blocks(torch.ones(2, 3, 4))
    _, s = quantize_fp8_blocks(torch.ones(200, 200))
    with pytest.raises(ValueError, match=r"scale \[2, 2\] does not tile q \[200, 300\]"):
        dequantize_fp8_blocks(torch.zeros(200, 300).to(torch.float8_e4m3fn), s)
    with pytest.raises(ValueError, match="scale_fmt"):
        quantize_fp8_blocks(torch.ones(2, 2), scale_fmt="e4m3")


def test_fp4_nibble_order_by_hand():
    w = torch.zeros(1, 32)
    w[0, 0], w[0, 1] = 0.5, -3.0  # codes 0b0001 and 0b1101
    w[0, 2], w[0, 3] = 6.0, 1.5  # codes 0b0111 and 0b0011; amax 6 -> scale 1
    packed, s = quantize_fp4_blocks(w)
    assert packed.dtype == torch.int8 and packed.shape == (1, 16)
    assert s.dtype == torch.float8_e8m0fnu and s.view(torch.uint8).tolist() == [[127]]
    assert packed.view(torch.uint8)[0, :3].tolist() == [0xD1, 0x37, 0x00]  # element 2j in the LOW nibble
    assert packed[0, 0].item() == -47  # 0xD1 as int8
    assert dequantize_fp4_blocks(packed, s)[0, :4].tolist() == [0.5, -3.0, 6.0, 1.5]


def test_fp4_blocks_match_brute_force():
    w = _random_weight(8, 128, seed=5)
    packed, s = quantize_fp4_blocks(w)
    assert s.shape == (8, 4)
    amax = w.view(8, 4, 32).abs().amax(-1).clamp(min=6 * 2.0**-126)
    s_ref = torch.exp2(torch.ceil(torch.log2(amax.double() / 6)))
    assert torch.equal(s.double(), s_ref)
    ref = (e2m1_nearest(w.view(8, 4, 32).double() / s_ref[..., None]) * s_ref[..., None]).view(8, 128)
    assert torch.equal(dequantize_fp4_blocks(packed, s).double(), ref)


def test_fp4_stacked_experts_and_errors():
    w = _random_weight(6, 64, seed=6).view(2, 3, 64)  # [E, N, K]
    packed, s = quantize_fp4_blocks(w)
    assert packed.shape == (2, 3, 32) and s.shape == (2, 3, 2)
    assert dequantize_fp4_blocks(packed, s).shape == (2, 3, 64)
    with pytest.raises(ValueError, match=r"K .*\[4, 48\].*multiple of block=32"):
        quantize_fp4_blocks(torch.ones(4, 48))
