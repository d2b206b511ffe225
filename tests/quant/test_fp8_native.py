"""The native FP8 GEMM path (CUDA, F.scaled_mm with DeepSeek's 1x128 x 128x128 block recipe).

No GPU here: the operands are checked against a brute-force emulation of the blockwise GEMM and the
model's reference path, and against PyTorch's own shape/stride contract for the CUDA op (its meta
function, run on fake CUDA tensors); the module's dispatch is checked with F.scaled_mm stood in for.
"""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode

from trillion.formats import fake_quant_fp8
from trillion.quant import kernels
from trillion.quant.linear import FP8BlockLinear

pytestmark = pytest.mark.skipif(not kernels.HAS_SCALED_MM, reason="this torch has no F.scaled_mm")


def emulated_blockwise_mm(a, sa, b, sb):
    """What the 1x128 x 128x128 GEMM computes, in float64: (a * sa) @ (b * sb), block by block."""
    k, n = b.shape
    sk = -(-k // 128)
    a64 = a.double() * sa.double().repeat_interleave(128, dim=1)[:, :k]
    sw = sb[:sk].double().T  # [N/128, K/128]: the padding rows along K are ignored
    b64 = b.double() * sw.repeat_interleave(128, 0).repeat_interleave(128, 1)[:n, :k].T
    return a64 @ b64


def test_act_quant_equals_fake_quant():
    x = torch.randn(5, 384, generator=torch.Generator().manual_seed(0)) * torch.logspace(-3, 3, 384)
    a, s = kernels.act_quant_fp8(x)
    assert a.dtype == torch.float8_e4m3fn and s.shape == (5, 3)
    assert torch.equal((a.float().view(5, 3, 128) * s[..., None]).view(5, 384), fake_quant_fp8(x, 128))


@pytest.mark.parametrize("scale_fmt", ["ue8m0", "float32"])
@pytest.mark.parametrize("n,k", [(256, 384), (128, 512), (384, 1280)])
def test_operands_reproduce_the_reference_product(n, k, scale_fmt):
    g = torch.Generator().manual_seed(n + k)
    w, x = torch.randn(n, k, generator=g) * 0.05, torch.randn(6, k, generator=g)
    m = FP8BlockLinear.from_float(w, act_quant=True)
    if scale_fmt == "float32":
        m.qscale = kernels.scale_values(m.qscale, torch.float32)  # V3's float32 scales
    a, sa, b, sb = kernels.fp8_operands(x, m.codes, m.qscale)
    assert sb.shape[0] % 4 == 0 and sb.shape[0] >= k // 128
    want = m.reference_forward(x).double()
    got = emulated_blockwise_mm(a, sa, b, sb)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


@pytest.mark.parametrize("m,n,k", [(1, 256, 384), (7, 512, 512), (64, 1024, 7168), (3, 128, 128)])
def test_operands_meet_pytorchs_cuda_contract(m, n, k):
    """PyTorch's meta function for the op mirrors the CUDA checks (dtypes, layouts, scale shapes):
    the operands, built here on the CPU, are run through it as fake CUDA tensors of the same layout."""
    g = torch.Generator().manual_seed(k)
    lin = FP8BlockLinear.from_float(torch.randn(n, k, generator=g), act_quant=True)
    ops = kernels.fp8_operands(torch.randn(m, k, generator=g), lin.codes, lin.qscale)
    S = F.ScalingType
    with FakeTensorMode():
        a, sa, b, sb = (torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="cuda") for t in ops)
        y = F.scaled_mm(a, b, sa, S.BlockWise1x128, sb, S.BlockWise128x128, output_dtype=torch.bfloat16)
        assert y.shape == (m, n) and y.dtype == torch.bfloat16 and y.device.type == "cuda"
        # and the contract is a real one: row-major activation scales are refused
        if m > 1 and k > 128:
            with pytest.raises(RuntimeError):
                F.scaled_mm(
                    a,
                    b,
                    sa.contiguous(),
                    S.BlockWise1x128,
                    sb,
                    S.BlockWise128x128,
                    output_dtype=torch.bfloat16,
                )


def test_module_takes_the_native_gemm_when_the_device_has_it(monkeypatch):
    g = torch.Generator().manual_seed(3)
    w, x = torch.randn(256, 384, generator=g) * 0.05, torch.randn(2, 3, 384, generator=g)
    m = FP8BlockLinear.from_float(w, act_quant=True)
    calls = []

    def fake_scaled_mm(a, b, sa, ra, sb, rb, output_dtype):
        assert (ra, rb) == (F.ScalingType.BlockWise1x128, F.ScalingType.BlockWise128x128)
        calls.append(a.shape)
        return emulated_blockwise_mm(a, sa, b, sb).to(output_dtype)

    monkeypatch.setattr(kernels, "fp8_native_ok", lambda x, n, k: True)
    monkeypatch.setattr(F, "scaled_mm", fake_scaled_mm)
    y = m(x)
    assert calls == [(6, 384)] and y.shape == (2, 3, 256) and y.dtype == torch.float32
    want = m.reference_forward(x)
    torch.testing.assert_close(y, want, rtol=1e-2, atol=1e-2 * float(want.abs().max()))  # bf16 out


def test_a_refusing_gemm_falls_back_once_and_for_all(monkeypatch):
    g = torch.Generator().manual_seed(4)
    w, x = torch.randn(128, 256, generator=g), torch.randn(4, 256, generator=g)
    m = FP8BlockLinear.from_float(w, act_quant=True)
    tries = []

    def refusing(*args, **kwargs):
        tries.append(1)
        raise RuntimeError("block-wise scaling needs cuBLAS >= 12.9")

    monkeypatch.setattr(kernels, "_native_fp8_broken", [])
    monkeypatch.setattr(F, "scaled_mm", refusing)
    monkeypatch.setattr(kernels, "HAS_SCALED_MM", True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    cuda_like = type("X", (), {"device": torch.device("cuda")})()
    assert kernels.fp8_native_ok(cuda_like, 128, 256)
    with pytest.warns(UserWarning, match="native FP8 GEMM unavailable"):
        assert kernels.fp8_block_linear(x, m.codes, m.qscale) is None
    assert not kernels.fp8_native_ok(cuda_like, 128, 256)  # not tried again
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(m(x), m.reference_forward(x), rtol=1e-5, atol=1e-4)
    assert tries == [1]


def test_native_gemm_is_not_offered_off_hopper_or_on_partial_blocks():
    x = torch.empty(2, 256)
    assert not kernels.fp8_native_ok(x, 256, 256)  # a CPU tensor
    cuda_like = type("X", (), {"device": torch.device("cuda")})()
    assert not kernels.fp8_native_ok(cuda_like, 256, 200)  # K not a multiple of 128
    assert not kernels.fp8_native_ok(cuda_like, 200, 256)
