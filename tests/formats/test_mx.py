"""OCP MX along the last dim, FP4 packing, activation fake quantisation."""

from __future__ import annotations

import math

import pytest
import torch

from trillion.formats import (
    blocks,
    dequantize_mx,
    fake_quant_fp4,
    fake_quant_fp8,
    pack_fp4,
    quantize_fp4_blocks,
    quantize_mx,
    unpack_fp4,
)

from .reference import e2m1_nearest


def test_pack_unpack_round_trip_and_order():
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 16, (3, 5, 8), generator=g).to(torch.uint8)
    assert torch.equal(unpack_fp4(pack_fp4(codes)), codes)
    assert pack_fp4(torch.tensor([0x1, 0xF], dtype=torch.uint8)).view(torch.uint8).tolist() == [0xF1]
    with pytest.raises(ValueError, match=r"even last dim.*\[3\]"):
        pack_fp4(torch.zeros(3, dtype=torch.uint8))


def test_mxfp8_round_trip_and_scales():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(4, 96, generator=g) * 10
    q, s = quantize_mx(w)
    assert q.dtype == torch.float8_e4m3fn and s.dtype == torch.float8_e8m0fnu and s.shape == (4, 3)
    amax = w.view(4, 3, 32).abs().amax(-1)
    assert torch.equal(s.float(), torch.exp2(torch.ceil(torch.log2(amax / 448))))
    ref = (w.view(4, 3, 32) / s.float()[..., None]).to(torch.float8_e4m3fn).float() * s.float()[..., None]
    assert torch.equal(dequantize_mx(q, s), ref.view(4, 96))


def test_mx_ocp_floor_rule_may_saturate():
    w = torch.zeros(1, 32)
    w[0, 0] = 480.0  # floor(log2 480) - 8 = 0: scale 1, and 480 saturates to 448
    q, s = quantize_mx(w, scale_rule="floor")
    assert s.float().item() == 1.0 and dequantize_mx(q, s)[0, 0].item() == 448.0
    q, s = quantize_mx(w)  # DeepSeek's ceil rule never clips
    assert s.float().item() == 2.0 and dequantize_mx(q, s)[0, 0].item() == 480.0
    with pytest.raises(ValueError, match="'round'"):
        quantize_mx(w, scale_rule="round")


def test_mxfp4_is_the_fp4_block_format():
    w = torch.randn(3, 64, generator=torch.Generator().manual_seed(2))
    a, b = quantize_mx(w, "e2m1"), quantize_fp4_blocks(w)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1].view(torch.uint8), b[1].view(torch.uint8))


def test_mx_errors_name_the_shapes():
    with pytest.raises(ValueError, match="'e5m2'"):
        quantize_mx(torch.ones(32), "e5m2")
    with pytest.raises(ValueError, match=r"\[2, 40\].*block=32"):
        quantize_mx(torch.ones(2, 40))
    q, _ = quantize_mx(torch.ones(2, 64))
    with pytest.raises(ValueError, match=r"scale \[3, 2\] does not tile e4m3 values \[2, 64\]"):
        dequantize_mx(q, torch.ones(3, 2))


def _ref_fake_fp8(x: torch.Tensor, block: int) -> torch.Tensor:
    xb = x.float().unflatten(-1, (-1, block))
    s = torch.exp2(torch.ceil(torch.log2(xb.abs().amax(-1, keepdim=True).clamp(min=1e-4) / 448)))
    return ((xb / s).to(torch.float8_e4m3fn).float() * s).flatten(-2).to(x.dtype)


def test_fake_quant_fp8_matches_torch_cast_reference():
    x = torch.randn(2, 3, 256, generator=torch.Generator().manual_seed(3)) * 7
    x[0, 0, :128] = 0  # an all-zero block: amax floor
    for dtype in (torch.float32, torch.bfloat16):
        xd = x.to(dtype)
        before = xd.clone()
        y = fake_quant_fp8(xd)
        assert y.dtype == dtype and torch.equal(y, _ref_fake_fp8(xd, 128))
        assert torch.equal(xd, before)  # input untouched
    y = fake_quant_fp8(x, scale_fmt=None)
    assert bool(((y - x).abs() <= x.abs() * 2.0**-4 + 1e-9).all())


def test_fake_quant_fp4_matches_brute_force():
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(4))
    xb = x.double().view(4, 2, 32)
    s = torch.exp2(torch.ceil(torch.log2(xb.abs().amax(-1, keepdim=True) / 6)))
    assert torch.equal(fake_quant_fp4(x).double(), (e2m1_nearest(xb / s) * s).view(4, 64))
    assert torch.equal(fake_quant_fp4(torch.zeros(2, 32)), torch.zeros(2, 32))


def test_fake_quant_works_on_tensors_that_need_grad():
    x = torch.randn(2, 128, requires_grad=True)
    assert fake_quant_fp8(x).shape == (2, 128) and fake_quant_fp4(x).shape == (2, 128)


def test_fake_quant_poisons_only_the_bad_block():
    x = torch.ones(1, 256)
    x[0, 5] = math.nan
    x[0, 200] = math.inf
    y = fake_quant_fp8(x, block=64)
    assert torch.isnan(y[0, :64]).all() and torch.isnan(y[0, 192:]).all()
    assert torch.equal(y[0, 64:192], torch.ones(128))
    y = fake_quant_fp4(x)
    assert torch.isnan(y[0, :32]).all() and torch.equal(y[0, 32:64], torch.ones(32))


def test_fake_quant_errors():
    with pytest.raises(ValueError, match=r"fake_quant_fp8.*\[2, 100\].*block=128"):
        fake_quant_fp8(torch.ones(2, 100))
    with pytest.raises(ValueError, match=r"fake_quant_fp4.*\[2, 40\].*block=32"):
        fake_quant_fp4(torch.ones(2, 40))


def test_blocks_module_reexports():
    assert blocks.quantize_mx is quantize_mx and callable(blocks.hadamard)
