"""The one place that knows about kernels: fast paths for quantised matmuls, each beside a plain one.

  int8_linear(x, q, scale, kernel_dtype)   CPU: aten._weight_int8pack_mm (int8 weight, one scale per
                                           output channel) for a few rows; elsewhere dequantise + F.linear
  int4_linear(x, packed, g, sz, layout)    CPU: aten._weight_int4pack_mm_for_cpu on a weight in the
                                           kernel's own layout (pack_tinygemm) for a few rows; else
                                           dequantise + F.linear
  fp8_block_linear(x, codes, scale)        Hopper GPU: F.scaled_mm, DeepSeek's FP8 recipe (act_quant
                                           1x128 x weight 128x128 blocks; trillion.device decides where
                                           it runs); the caller falls back to dequantise + F.linear
  decode8(codes, fmt, dtype)               8-bit codes (e4m3, hif8) -> values by one gather in a table
  decode_fp4(packed, dtype)                packed e2m1 bytes -> values, one gather per byte (two values)
  scale_blocks / scale_groups              multiply values by their block or group scales

PyTorch's CPU int8 and int4 kernels are vectorised for bfloat16 (and float16) activations; their
float32 variants are several times slower than a float32 matmul. So the fast paths run them in
`kernel_dtype` (bfloat16 by default: activations rounded to bf16, fp32 accumulation, output cast
back); `kernel_dtype=torch.float32` gives the exact-but-slow variant.

Those kernels are matrix-vector products: their time grows with the number of rows M as if each row
were a separate call (2048 x 2048 weight, 2 threads, AMX machine: int8 0.12 ms at M = 1, 12 ms at
M = 256, where float32 takes 6 ms). A prefill chunk or a large batch is better served by
dequantising the weight once and running the BLAS matmul in `kernel_dtype` (1.9 ms int8, 4.5 ms int4
at M = 256). Above INT8_PACK_ROWS / INT4_PACK_ROWS rows the functions do that; same maths, the
activations rounded to `kernel_dtype` either way (`python benchmarks/kernel_rows.py` measures it).

PyTorch's CPU int4 kernel wants its weight in a layout of its own (aten._convert_weight_to_int4pack_
for_cpu): rows in blocks of `block_n` (64 with AVX512, 32 otherwise), the bytes of a block contiguous,
two rows per byte. `tinygemm_block_n()` finds block_n on this machine by packing a probe with aten and
reading it back with `unpack_tinygemm`; checkpoints never hold this layout.
"""

from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F

from ..device import has_fp8_block_gemm
from ..formats import all_codes, decode, e8m0
from ..formats.blocks import FP8_AMAX_FLOOR, FP8_MAX
from ..formats.scales import ue8m0_scale
from .integer import INT4_OFFSET

_aten = torch.ops.aten
HAS_INT8_MM = hasattr(_aten, "_weight_int8pack_mm")
HAS_INT4_MM = hasattr(_aten, "_weight_int4pack_mm_for_cpu") and hasattr(
    _aten, "_convert_weight_to_int4pack_for_cpu"
)
_INT8_MM = _aten._weight_int8pack_mm.default if HAS_INT8_MM else None
# aten's CPU int8 kernel reads the input width in steps of 16: other widths give garbage or crash
# (torch 2.13), so they take the plain path
INT8_MM_K = 16
_INT4_MM = _aten._weight_int4pack_mm_for_cpu.default if HAS_INT4_MM else None
# rows above which dequantise + matmul beats the kernels (measured, see the module docstring)
INT8_PACK_ROWS = 12
INT4_PACK_ROWS = 64


def _fast_bf16_matmul() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively (oneDNN with AVX512-BF16 / AMX)."""
    try:
        return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


FAST_BF16_MATMUL = _fast_bf16_matmul()  # read once: a constant to torch.compile


def _rows_dtype(kernel_dtype: torch.dtype) -> torch.dtype:
    """The dtype of the dequantise + matmul path: kernel_dtype where the CPU has a fast matmul for it."""
    return kernel_dtype if kernel_dtype == torch.float32 or FAST_BF16_MATMUL else torch.float32


# ---------------------------------------------------------------------------------------------- INT8


def int8_linear(
    x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, kernel_dtype: torch.dtype
) -> torch.Tensor:
    """x [..., K] @ (q int8 [N, K] * scale [N])^T -> [..., N] in x.dtype."""
    if x.device.type != "cpu" or not HAS_INT8_MM or q.shape[1] % INT8_MM_K:
        return F.linear(x, (q.to(x.dtype) * scale.to(x.dtype)[:, None]))
    x2 = x.reshape(-1, x.shape[-1])
    if x2.shape[0] > INT8_PACK_ROWS:
        dt = _rows_dtype(kernel_dtype)
        y = F.linear(x2.to(dt), q.to(dt)).to(x.dtype) * scale.to(x.dtype)
        return y.view(*x.shape[:-1], q.shape[0])
    # decode calls this with one token: every op saved here is a few microseconds per matmul
    x2 = x2.to(kernel_dtype).contiguous()
    if scale.dtype != kernel_dtype:
        scale = scale.to(kernel_dtype)
    y = _INT8_MM(x2, q, scale)  # [M, N]
    return y.to(x.dtype).view(*x.shape[:-1], q.shape[0])


# ---------------------------------------------------------------------------------------------- INT4


def pack_tinygemm(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes 0..15 [N, K] -> the CPU int4 kernel's packed uint8 [N, K // 2] (aten packs it)."""
    return _aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32).contiguous(), 2)


def unpack_tinygemm(packed: torch.Tensor, block_n: int, halves: bool = True) -> torch.Tensor:
    """The CPU int4 kernel's layout [N, K // 2] -> uint8 codes [N, K]. Pure PyTorch, any device.

    Each full block of `block_n` rows is stored k-major: byte (k, j) holds row j (low nibble) and row
    j + block_n / 2 (high nibble) with `halves`, rows 2j and 2j + 1 without. A last partial block
    always pairs rows 2j and 2j + 1.
    """
    n, k = packed.shape[0], packed.shape[1] * 2
    flat = packed.reshape(-1)
    nb, half = n // block_n, block_n // 2
    full = flat[: nb * half * k].view(nb, k, half)  # [NB, K, bn/2]
    lo, hi = full & 0x0F, full >> 4
    if halves:
        rows = torch.cat((lo, hi), dim=2)  # [NB, K, bn]: rows j, then rows j + bn/2
    else:
        rows = torch.stack((lo, hi), dim=3).flatten(2)  # rows 2j, 2j + 1
    parts = [rows.transpose(1, 2).reshape(nb * block_n, k)]
    tail = n - nb * block_n
    if tail:
        t = flat[nb * half * k :].view(k, tail // 2)  # [K, tail/2]
        parts.append(torch.stack((t & 0x0F, t >> 4), dim=2).reshape(k, tail).T)
    return torch.cat(parts).contiguous()


@functools.lru_cache(maxsize=1)
def tinygemm_layout() -> tuple[int, bool] | None:
    """(block_n, halves) of this machine's CPU int4 layout, or None when we cannot read it back."""
    if not HAS_INT4_MM:
        return None
    g = torch.Generator().manual_seed(0)
    probes = [torch.randint(0, 16, (n, 64), generator=g, dtype=torch.uint8) for n in (176, 160, 112)]
    try:
        packed = [pack_tinygemm(p) for p in probes]
    except RuntimeError:
        return None
    for block_n in (64, 32, 16):
        for halves in (True, False):
            if all(torch.equal(unpack_tinygemm(pk, block_n, halves), p) for pk, p in zip(packed, probes)):
                return block_n, halves
    return None


def int4_scales_and_zeros(scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """scale [N, K // g] -> the kernel's [K // g, N, 2] (scale, zero); zero = 0: w = (code - 8) * scale."""
    s = scale.to(dtype).T
    return torch.stack((s, torch.zeros_like(s)), dim=-1).contiguous()


def int4_linear(
    x: torch.Tensor,
    packed: torch.Tensor,
    group: int,
    sz: torch.Tensor,
    layout: tuple[int, bool],
    sz_computed: bool = False,
) -> torch.Tensor:
    """x [..., K] @ W^T with W in the CPU kernel's layout (`packed`, `sz` from int4_scales_and_zeros,
    `layout` = tinygemm_layout()). `sz_computed`: sz is made by the caller (not a stored buffer or a
    view of one)."""
    x2 = x.reshape(-1, x.shape[-1])
    if x2.shape[0] > INT4_PACK_ROWS:
        dt = _rows_dtype(sz.dtype)
        w = dequantize_int4_codes(unpack_tinygemm(packed, *layout), sz[..., 0].T, dt)
        return F.linear(x2.to(dt), w).to(x.dtype).view(*x.shape[:-1], packed.shape[0])
    x2 = x2.to(sz.dtype).contiguous()
    # inductor's lowering of the aten op fails when `sz` is computed inside the graph (torch 2.13:
    # "LoweringException: AssertionError: Pointwise"); such a call goes through an opaque wrapper,
    # which costs a trip through Python per call
    mm = torch.ops.trillion.int4_mm if sz_computed and torch.compiler.is_compiling() else _INT4_MM
    y = mm(x2, packed, group, sz)  # [M, N]
    return y.to(x.dtype).view(*x.shape[:-1], packed.shape[0])


if HAS_INT4_MM:

    @torch.library.custom_op("trillion::int4_mm", mutates_args=())
    def _int4_mm(x: torch.Tensor, packed: torch.Tensor, group: int, sz: torch.Tensor) -> torch.Tensor:
        return _INT4_MM(x, packed, group, sz)

    @_int4_mm.register_fake
    def _(x: torch.Tensor, packed: torch.Tensor, group: int, sz: torch.Tensor) -> torch.Tensor:
        return x.new_empty(x.shape[0], sz.shape[1])


def dequantize_int4_codes(codes: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """codes 0..15 [N, K], scale [N, K // g] -> w [N, K]."""
    n, k = codes.shape
    q = codes.to(dtype).view(n, scale.shape[-1], -1) - INT4_OFFSET
    return (q * scale.to(dtype)[..., None]).view(n, k)


# ------------------------------------------------------------------------------- FP8 / FP4 / HiF8


@functools.lru_cache(maxsize=32)
def _table8(fmt: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return decode(all_codes(fmt), fmt).to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=8)
def _table_fp4_pairs(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    v = decode(all_codes("e2m1"), "e2m1")  # [16]
    pairs = torch.stack((v.repeat(16), v.repeat_interleave(16)), dim=-1)  # byte b -> (low nibble, high)
    return pairs.to(device=device, dtype=dtype)  # [256, 2]


def decode8(codes: torch.Tensor, fmt: str, dtype: torch.dtype) -> torch.Tensor:
    """uint8 codes of an 8-bit format [...] -> values [...] as dtype (a gather: faster than torch's
    own float8 cast on CPU, and the same code serves HiF8, which torch has no dtype for)."""
    table = _table8(fmt, dtype, codes.device)
    return table.index_select(0, codes.reshape(-1).to(torch.int32)).view(codes.shape)


def decode_fp4(packed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """packed e2m1 int8 / uint8 [..., K // 2] -> values [..., K] (element 2j from the low nibble)."""
    table = _table_fp4_pairs(dtype, packed.device)
    flat = packed.view(torch.uint8).reshape(-1).to(torch.int32)
    return table.index_select(0, flat).view(*packed.shape[:-1], packed.shape[-1] * 2)


def scale_values(scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """UE8M0 codes (uint8) or float32 scales -> values as dtype (UE8M0 values are exact in bf16)."""
    s = e8m0.decode(scale) if scale.dtype == torch.uint8 else scale.float()
    return s.to(dtype)


def scale_blocks(v: torch.Tensor, s: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """v [N, K] times one scale per bn x bk block, s [SN, SK] (edge blocks may be partial); in place."""
    (n, k), (bn, bk) = v.shape, block
    if n % bn == 0 and k % bk == 0:
        v.view(n // bn, bn, k // bk, bk).mul_(s[:, None, :, None])
        return v
    return v.mul_(s.repeat_interleave(bn, dim=0).repeat_interleave(bk, dim=1)[:n, :k])


def scale_groups(v: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """v [N, K] times one scale per group of K // SK along K, s [N, SK]; in place."""
    n, _k = v.shape
    v.view(n, s.shape[1], -1).mul_(s[..., None])
    return v


# ------------------------------------------------------------------ FP8 on CUDA: DeepSeek's recipe
#
# DeepSeek's FP8 GEMM multiplies E4M3 activations with one UE8M0 scale per 128 along K by E4M3
# weights with one scale per 128 x 128 block, accumulating in float32. cuBLAS runs exactly that on
# Hopper (sm_90, CUDA >= 12.9) and PyTorch exposes it as F.scaled_mm with the BlockWise1x128 x
# BlockWise128x128 recipe. Its contract (PyTorch's own shape checks, which `fp8_operands` is tested
# against on a fake CUDA device): activations [M, K] row-major, weight [K, N] column-major (our
# [N, K] codes, transposed: a view), both scales float32 and outer-dim-major, the weight's padded to
# a multiple of 4 blocks along K; K and N multiples of 128 here (no partial blocks).

HAS_SCALED_MM = hasattr(F, "scaled_mm") and hasattr(F, "ScalingType")
_native_fp8_broken: list[str] = []  # the first failure of the native GEMM, after which it is not tried


def act_quant_fp8(x: torch.Tensor, block: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] -> (E4M3 [M, K], float32 UE8M0 scales [M, K / block]): DeepSeek's act_quant, whose
    dequantisation equals trillion.formats.fake_quant_fp8 (same amax floor, same scale rule)."""
    xb = x.float().unflatten(-1, (-1, block))
    amax = xb.abs().amax(dim=-1, keepdim=True).clamp(min=FP8_AMAX_FLOOR)
    s = e8m0.decode(ue8m0_scale(amax, FP8_MAX))
    codes = (xb / s).to(torch.float8_e4m3fn).flatten(-2)  # |x / s| <= 448: the cast never overflows
    return codes, s.squeeze(-1)


def fp8_operands(
    x: torch.Tensor, codes: torch.Tensor, wscale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """F.scaled_mm's operands for x [M, K] @ W^T, W = e4m3 `codes` uint8 [N, K] with block scales
    `wscale` [N / 128, K / 128] (UE8M0 codes or float32): (a, scale_a, b, scale_b)."""
    a, sa = act_quant_fp8(x)
    b = codes.view(torch.float8_e4m3fn).t()  # [K, N], column-major
    sw = scale_values(wscale, torch.float32)  # [N/128, K/128]
    sb = F.pad(sw, (0, -sw.shape[1] % 4)).t()  # [ceil4(K/128), N/128]
    return a, _outer_major(sa), b, _outer_major(sb)


def _outer_major(t: torch.Tensor) -> torch.Tensor:
    """t [R, C] laid out column by column: strides (1, R), even where R or C is 1."""
    return torch.empty_strided(t.shape, (1, t.shape[0]), dtype=t.dtype, device=t.device).copy_(t)


def fp8_native_ok(x: torch.Tensor, n: int, k: int) -> bool:
    """Whether F.scaled_mm's 1x128 x 128x128 FP8 GEMM can take x [..., K] @ W[N, K]^T here."""
    if not HAS_SCALED_MM or _native_fp8_broken:
        return False
    if n % 128 or k % 128:
        return False
    return has_fp8_block_gemm(x.device)  # cuBLAS has 2-D block scales on Hopper (sm_90) only


def fp8_block_linear(x: torch.Tensor, codes: torch.Tensor, wscale: torch.Tensor) -> torch.Tensor | None:
    """x [..., K] quantised as DeepSeek's act_quant, times the FP8 block weight, by the native GEMM
    (bf16 out, cast to x.dtype); None when the GEMM refused (then it is not tried again)."""
    x2 = x.reshape(-1, x.shape[-1])
    a, sa, b, sb = fp8_operands(x2, codes, wscale)
    S = F.ScalingType
    try:
        y = F.scaled_mm(a, b, sa, S.BlockWise1x128, sb, S.BlockWise128x128, output_dtype=torch.bfloat16)
    except RuntimeError as e:  # an older cuBLAS, a shape this build does not take
        if torch.compiler.is_compiling():
            raise
        _native_fp8_broken.append(str(e))
        warnings.warn(f"native FP8 GEMM unavailable, dequantising instead: {e}", stacklevel=2)
        return None
    return y.to(x.dtype).view(*x.shape[:-1], codes.shape[0])
