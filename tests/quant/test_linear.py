"""Each quantised Linear: the fast path against the plain reference, storage round trips, act_quant."""

import pytest
import torch
import torch.nn.functional as F

from trillion.formats import fake_quant_fp8, quantize_fp8_blocks, quantize_mx
from trillion.quant import FORMATS
from trillion.quant.hif8 import quantize_hif8_blocks
from trillion.quant.integer import quantize_int4, quantize_int8

PARAMS = {"int4": {"group_size": 32}}
# The int8 / int4 CPU kernels take bf16 activations: compare them at bf16 precision.
TOL = {"int8": 2e-2, "int4": 2e-2}


def _weight(n=192, k=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g) * torch.exp2(torch.randint(-6, 3, (n, 1), generator=g).float())


def _close(got, want, fmt):
    tol = TOL.get(fmt, 1e-5)
    torch.testing.assert_close(got, want, rtol=tol, atol=tol * float(want.abs().max()))


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_fast_path_equals_dequantize_then_linear(fmt):
    w = _weight()
    m = FORMATS[fmt].from_float(w, **PARAMS.get(fmt, {}))
    x = torch.randn(2, 3, 256, generator=torch.Generator().manual_seed(1))
    assert torch.equal(m.dequantized_weight(), m.reference_weight())  # two independent decoders agree
    want = m.reference_forward(x)
    assert want.shape == (2, 3, 192) and torch.equal(want, F.linear(x, m.reference_weight()))
    _close(m(x), want, fmt)
    # the quantisation itself: close to the float weight (relative to each row's scale)
    rel = ((m.reference_weight() - w).norm(dim=1) / w.norm(dim=1)).max()
    # (hif8: rows 2**8 apart share a block here, and HiF8 keeps 3 mantissa bits over a 2**7 range only)
    assert rel < {"int4": 0.15, "mxfp4": 0.2, "hif8": 0.1}.get(fmt, 0.05)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_grouped_product_equals_the_einsum(fmt):
    m = FORMATS[fmt].from_float(_weight(), **PARAMS.get(fmt, {}))  # G = 3 groups of r = 64 rows
    o = torch.randn(2, 5, 3, 256, generator=torch.Generator().manual_seed(2))
    want = torch.einsum("btgi,gri->btgr", o, m.reference_weight().view(3, 64, 256))
    _close(m.grouped(o), want, fmt)


def test_stored_tensors_are_the_format_quantisers_output():
    w = _weight()
    q8, s8 = quantize_int8(w)
    q4, s4 = quantize_int4(w, 32)
    fp8 = quantize_fp8_blocks(w)
    want = {
        "int8": (q8, s8),
        "int4": (q4, s4),  # read back from the CPU kernel's layout
        "fp8": fp8,
        "mxfp8": quantize_mx(w, "e4m3"),
        "mxfp4": quantize_mx(w, "e2m1"),
        "hif8": quantize_hif8_blocks(w),
    }
    for fmt, (q, s) in want.items():
        stored = FORMATS[fmt].from_float(w, **PARAMS.get(fmt, {})).stored_tensors()
        assert stored["weight"].dtype == q.dtype and stored["scale"].dtype == s.dtype, fmt
        assert torch.equal(stored["weight"].view(torch.uint8), q.view(torch.uint8)), fmt
        assert torch.equal(
            stored["scale"].view(torch.uint8) if s.dtype != torch.bfloat16 else stored["scale"],
            s.view(torch.uint8) if s.dtype != torch.bfloat16 else s,
        ), fmt
    assert fp8[0].dtype == torch.float8_e4m3fn and fp8[1].shape == (2, 2)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_state_dict_round_trip(fmt):
    cls = FORMATS[fmt]
    m = cls.from_float(_weight(), **PARAMS.get(fmt, {}))
    sd = m.state_dict()
    assert set(sd) == {"weight", "scale"}
    fresh = cls(256, 192, **PARAMS.get(fmt, {}))
    fresh.load_state_dict(sd)
    assert torch.equal(fresh.dequantized_weight(), m.dequantized_weight())
    with pytest.raises(RuntimeError, match="scale"):  # a scale of the wrong shape is refused, by name
        cls(256, 192, **PARAMS.get(fmt, {})).load_state_dict(
            {"weight": sd["weight"], "scale": sd["scale"][:1]}
        )


def test_act_quant_rounds_activations_like_deepseek():
    w = _weight()
    m = FORMATS["fp8"].from_float(w, act_quant=True)
    x = torch.randn(4, 256, generator=torch.Generator().manual_seed(3))
    want = F.linear(fake_quant_fp8(x, 128), m.reference_weight())
    torch.testing.assert_close(m(x), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(m.reference_forward(x), want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(m(x), F.linear(x, m.reference_weight()), rtol=1e-4, atol=1e-4)


def test_model_to_dtype_keeps_the_codes():
    m = FORMATS["fp8"].from_float(_weight())
    before = m.codes.clone()
    m.to(torch.bfloat16)
    assert m.dtype == torch.bfloat16 and torch.equal(m.codes, before) and m.codes.dtype == torch.uint8
    assert m.weight.dtype == torch.bfloat16 and m.weight.shape == (192, 256)
    x = torch.randn(2, 256, dtype=torch.bfloat16)
    assert m(x).dtype == torch.bfloat16


def test_int4_without_the_kernel_layout_falls_back_to_dequantisation():
    w = _weight(40, 64)  # 40 rows: the CPU int4 kernel needs a multiple of 16
    m = FORMATS["int4"].from_float(w, group_size=32)
    assert not m.tinygemm
    x = torch.randn(3, 64)
    torch.testing.assert_close(m(x), m.reference_forward(x), rtol=1e-5, atol=1e-5)
