"""The kernel dispatch layer: PyTorch's CPU int8 / int4 kernels and the table decoders, each
against a plain reference."""

import os
import platform
import subprocess
import sys
from pathlib import Path

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


# rows: few go through aten's kernel, many through dequantise + matmul (INT8_PACK_ROWS,
# INT8_PACK_ROWS_FP32); which path a row count takes is checked by the next test, at its thresholds
@pytest.mark.parametrize("rows", [(1,), (2, 3), (3, 7), (6, 7)])
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


# Where many rows go is kernels.rows_path's choice, by the CPU: dequantise + matmul in bf16 above
# INT8_PACK_ROWS / INT4_PACK_ROWS rows where oneDNN multiplies bf16 on AMX, in float32 above the
# *_FP32 thresholds elsewhere (PyTorch's bf16 matmul there is slower than float32). Each side is taken
# here by setting the probe's result; aten's kernels are wrapped to see which path ran.
@pytest.mark.parametrize("native", [True, False], ids=["bf16-matmul-native", "bf16-matmul-slow"])
def test_rows_take_the_path_the_cpu_is_fast_in(native, monkeypatch):
    monkeypatch.setattr(kernels, "NATIVE_BF16_MATMUL", native)
    int8_rows, dtype = kernels.rows_path(torch.bfloat16)
    int4_rows, dtype4 = kernels.rows_path(torch.bfloat16, int4=True)
    if native:
        assert (int8_rows, int4_rows) == (kernels.INT8_PACK_ROWS, kernels.INT4_PACK_ROWS)
        assert dtype == dtype4 == torch.bfloat16
    else:
        assert (int8_rows, int4_rows) == (kernels.INT8_PACK_ROWS_FP32, kernels.INT4_PACK_ROWS_FP32)
        assert dtype == dtype4 == torch.float32
    assert kernels.rows_path(torch.float32)[1] == torch.float32
    calls = []
    for name in ("_INT8_MM", "_INT4_MM"):
        op = getattr(kernels, name)
        if op is not None:
            monkeypatch.setattr(kernels, name, lambda *a, op=op, name=name: calls.append(name) or op(*a))

    g = torch.Generator().manual_seed(3)
    w = torch.randn(96, 256, generator=g)
    q, s = quantize_int8(w)
    packed, s4 = quantize_int4(w, 32)
    int4 = kernels.tinygemm_layout() is not None
    if int4:
        from trillion.quant.integer import unpack_int4

        tiny = kernels.pack_tinygemm(unpack_int4(packed))
        sz = kernels.int4_scales_and_zeros(s4, torch.bfloat16)
    for rows in sorted({int8_rows, int8_rows + 1, int4_rows, int4_rows + 1}):
        x = torch.randn(rows, 256, generator=g)
        calls.clear()
        cases = [("_INT8_MM", int8_rows, kernels.int8_linear(x, q, s, torch.bfloat16), dequantize_int8(q, s))]
        if int4:
            got = kernels.int4_linear(x, tiny, 32, sz, kernels.tinygemm_layout())
            cases.append(("_INT4_MM", int4_rows, got, dequantize_int4(packed, s4)))
        for name, max_rows, got, w_ref in cases:
            want = F.linear(x, w_ref)
            assert got.shape == want.shape and got.dtype == torch.float32
            assert calls.count(name) == (rows <= max_rows), (name, rows)
            if rows > max_rows and not native:  # float32 throughout: float32 rounding of 256-term sums
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
            else:  # activations rounded to bf16 (8 bits): ~0.4% of a typical output
                torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2 * float(want.abs().max()))
                assert float((got - want).abs().max()) > 1e-4, "expected bf16 activations"


def test_amx_probe_reads_the_cpu_flags_the_same_way_as_torch(monkeypatch):
    from_torch = kernels._cpu_has_amx()
    if not Path("/proc/cpuinfo").is_file():
        pytest.skip("no /proc/cpuinfo")
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert kernels._cpu_has_amx() == from_torch


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="ONEDNN_MAX_CPU_ISA names x86 ISAs")
@pytest.mark.parametrize("isa", ["AVX2", "AVX512_CORE_BF16"])
def test_bf16_probe_follows_onednn_isa_cap(isa):
    """oneDNN capped below AMX (AVX2: what an AVX2-only CPU has, and how the suite emulates one)."""
    code = "from trillion.quant import kernels; print(kernels.NATIVE_BF16_MATMUL)"
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": isa}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@needs_int4
@pytest.mark.parametrize("rows", [(1,), (2, 7), (10, 10)])  # 10 x 10: dequantise + matmul
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
