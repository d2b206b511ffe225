"""The kernel dispatch layer: PyTorch's CPU int8 / int4 kernels and the table decoders, each
against a plain reference."""

import pytest
import torch
import torch.nn.functional as F

from trillion.formats import all_codes, decode, dequantize_mx, quantize_mx, unpack_fp4
from trillion.quant import kernels
from trillion.quant.integer import dequantize_int4, dequantize_int8, quantize_int4, quantize_int8

needs_int4 = pytest.mark.skipif(
    kernels.tinygemm_layout() is None, reason="no readable CPU int4 kernel layout"
)


@needs_int4
@pytest.mark.parametrize("n", [16, 48, 64, 176, 256])
def test_tinygemm_layout_reads_back(n):
    codes = torch.randint(0, 16, (n, 96), dtype=torch.uint8, generator=torch.Generator().manual_seed(n))
    block_n, halves = kernels.tinygemm_layout()
    assert torch.equal(kernels.unpack_tinygemm(kernels.pack_tinygemm(codes), block_n, halves), codes)


# rows: 1 and 2 x 3 go through aten's kernel, 3 x 7 through dequantise + matmul (INT8_PACK_ROWS)
@pytest.mark.parametrize("rows", [(1,), (2, 3), (3, 7)])
@pytest.mark.parametrize("k", [80, 24, 72])  # 24, 72: widths aten's kernel cannot take (plain path)
def test_int8_kernel_matches_dequantize_then_linear(k, rows):
    g = torch.Generator().manual_seed(0)
    w, x = torch.randn(96, k, generator=g), torch.randn(*rows, k, generator=g)
    q, s = quantize_int8(w)
    want = F.linear(x, dequantize_int8(q, s))
    exact = kernels.int8_linear(x, q, s, torch.float32)
    assert exact.shape == (*rows, 96) and exact.dtype == torch.float32
    assert torch.isfinite(exact).all()
    torch.testing.assert_close(exact, want, rtol=1e-5, atol=1e-5)
    fast = kernels.int8_linear(x, q, s, torch.bfloat16)  # activations rounded to bf16
    torch.testing.assert_close(fast, want, rtol=2e-2, atol=2e-2 * float(want.abs().max()))


def test_row_paths_cross_over_where_documented():
    assert kernels.INT8_PACK_ROWS < 2 * 3 * 7 / 2 and 2 * 3 <= kernels.INT8_PACK_ROWS
    assert 2 * 7 <= kernels.INT4_PACK_ROWS < 10 * 9


@needs_int4
@pytest.mark.parametrize("rows", [(1,), (2, 7), (10, 9)])  # 10 x 9: dequantise + matmul
@pytest.mark.parametrize("group", [32, 128])
def test_int4_kernel_matches_dequantize_then_linear(group, rows):
    g = torch.Generator().manual_seed(1)
    w, x = torch.randn(80, 256, generator=g), torch.randn(*rows, 256, generator=g)
    packed, s = quantize_int4(w, group)
    want = F.linear(x, dequantize_int4(packed, s))
    from trillion.quant.integer import unpack_int4

    tiny = kernels.pack_tinygemm(unpack_int4(packed))
    layout = kernels.tinygemm_layout()
    exact = kernels.int4_linear(x, tiny, group, kernels.int4_scales_and_zeros(s, torch.float32), layout)
    assert exact.shape == (*rows, 80)
    torch.testing.assert_close(exact, want, rtol=1e-5, atol=1e-4)
    fast = kernels.int4_linear(x, tiny, group, kernels.int4_scales_and_zeros(s, torch.bfloat16), layout)
    torch.testing.assert_close(fast, want, rtol=2e-2, atol=2e-2 * float(want.abs().max()))


@pytest.mark.parametrize("fmt", ["e4m3", "hif8"])
def test_table_decoder_equals_the_format_decoder(fmt):
    codes = all_codes(fmt).view(16, 16)
    for dtype in (torch.float32, torch.bfloat16):
        got, want = kernels.decode8(codes, fmt, dtype), decode(codes, fmt).to(dtype)
        assert torch.equal(got.isnan(), want.isnan())
        assert torch.equal(got.nan_to_num(), want.nan_to_num())


def test_fp4_pair_decoder_equals_the_format_decoder():
    packed = torch.arange(256, dtype=torch.uint8).view(8, 32).view(torch.int8)
    assert torch.equal(kernels.decode_fp4(packed, torch.float32), decode(unpack_fp4(packed), "e2m1"))


def test_scaled_decoding_equals_the_mx_reference():
    w = torch.randn(64, 96, generator=torch.Generator().manual_seed(2))
    for elem in ("e4m3", "e2m1"):
        q, s = quantize_mx(w, elem)
        v = (
            kernels.decode8(q.view(torch.uint8), "e4m3", torch.float32)
            if elem == "e4m3"
            else kernels.decode_fp4(q, torch.float32)
        )
        got = kernels.scale_groups(v, kernels.scale_values(s.view(torch.uint8), torch.float32))
        assert torch.equal(got, dequantize_mx(q, s, elem))
