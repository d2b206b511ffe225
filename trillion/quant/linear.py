"""Quantised Linear modules: the weight stays as codes + scales in memory, one class per storage format.

  format  in memory (buffers)                              in a checkpoint (`weight`, `scale`)
  int8    qweight int8 [N, K], qscale [N] (kernel dtype)    I8 [N, K], BF16 [N]
  int4    packed uint8 [N, K/2] (the CPU kernel's layout),   U8 [N, K/2] (low nibble first), BF16 [N, K/g]
          sz [K/g, N, 2] (scale, zero)
  fp8     codes uint8 (e4m3 bits) [N, K], qscale [SN, SK]   F8_E4M3 [N, K], F8_E8M0 [SN, SK] (the release's)
  mxfp8   codes uint8 (e4m3 bits) [N, K], qscale [N, K/32]  F8_E4M3 [N, K], F8_E8M0 [N, K/32]
  mxfp4   codes uint8 (two e2m1) [N, K/2], qscale [N, K/32] I8 [N, K/2], F8_E8M0 [N, K/32] (the release's)
  hif8    codes uint8 [N, K], qscale [SN, SK]               U8 [N, K], F8_E8M0 [SN, SK]

(SN, SK = ceil(N/128), ceil(K/128); qscale holds UE8M0 codes as uint8, or float32 scales for FP8
checkpoints that store them so.) Codes are kept as integer tensors so that `model.to(dtype)` cannot
cast them; they are viewed as float8 only at the checkpoint boundary.

Every module has three ways to multiply, all the same maths:
  forward            the fast path: a PyTorch int8/int4 kernel on CPU; FP8 with act_quant on a
                     Hopper GPU: the native FP8 GEMM (F.scaled_mm, DeepSeek's block recipe); else a
                     fast dequantisation (one table gather) + F.linear in the compute dtype;
  reference_forward  the plain path: the independent decoders of trillion.formats / integer.py /
                     hif8.py, then F.linear in the compute dtype (tests compare the two);
  grouped            the block-diagonal product attention's wo_a needs (x [..., G, I] -> [..., G, r]).

Device kernels of the 8- and 4-bit float formats (the dispatch asks trillion.device, never a device
name):
  fp8    Hopper GPU (with act_quant): cuBLAS's block-scaled FP8 GEMM through F.scaled_mm;
  mxfp8, mxfp4, hif8, and fp8 anywhere else: no native kernel is wired yet (Blackwell's MX GEMMs and
         Ascend 950's MXFP8 / MXFP4 / HiF8 cube units are the targets), so these dequantise and call
         F.linear. On the CPU that is the designed path; on an accelerator the module warns once
         (trillion.device.warn_reference_path) so a slow run is never a silent one.

With `act_quant`, the input first goes through FP8 E4M3 with a UE8M0 scale per 128 along K, as
DeepSeek's `linear()` does (`act_quant`) before its FP8 and FP4 GEMMs.

`.weight` is a property: the dequantised weight, materialised on each access, for code that reads a
Linear's weight directly (Transformer.dtype, Transformer.logits for the head). Prefer calling the
module, which never materialises an int8 or int4 weight.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ceil_div
from ..device import warn_reference_path
from ..formats import dequantize_fp8_blocks, dequantize_mx, fake_quant_fp8, quantize_fp8_blocks, quantize_mx
from . import kernels
from .hif8 import dequantize_hif8_blocks, quantize_hif8_blocks
from .integer import (
    INT4_GROUPS,
    SCALE_DTYPE,
    dequantize_int4,
    dequantize_int8,
    pack_int4,
    quantize_int4,
    quantize_int8,
    unpack_int4,
)

ACT_BLOCK = 128  # DeepSeek's act_quant block along K
FP8_BLOCK = (128, 128)
MX_BLOCK = 32
E8M0 = torch.float8_e8m0fnu
E4M3 = torch.float8_e4m3fn


class QuantLinear(nn.Module):
    """Base class: a bias-free y = x W^T whose W is stored quantised (see the module docstring)."""

    fmt: ClassVar[str]

    def __init__(
        self, in_features: int, out_features: int, *, dtype=torch.float32, act_quant=False, device=None
    ):
        super().__init__()
        self.in_features, self.out_features, self.act_quant = in_features, out_features, bool(act_quant)
        # Carries the compute dtype through model.to(dtype), which casts floating buffers.
        self.register_buffer("dtype_tag", torch.empty(0, dtype=dtype, device=device), persistent=False)

    # -- what a format defines --

    @classmethod
    def shape_problem(
        cls, out_features: int, in_features: int, act_quant: bool = False, **params
    ) -> str | None:
        """Why a weight [out, in] cannot take this format (None when it can)."""
        if act_quant and in_features % ACT_BLOCK:
            return (
                f"activation quantisation needs the input width to be a multiple of {ACT_BLOCK}, "
                f"got {in_features}"
            )
        return None

    def quantize_(self, w: torch.Tensor) -> None:
        """Fill the buffers from a float weight [out, in]."""
        raise NotImplementedError

    def stored_spec(self) -> dict[str, tuple[tuple[int, ...], tuple[torch.dtype, ...]]]:
        """{leaf: (shape, accepted dtypes)} of the checkpoint tensors; the first dtype is the one written."""
        raise NotImplementedError

    def stored_tensors(self) -> dict[str, torch.Tensor]:
        """{leaf: tensor} as a checkpoint stores them (`weight`, `scale`)."""
        raise NotImplementedError

    def load_stored(self, tensors: dict[str, torch.Tensor]) -> None:
        """Fill the buffers from checkpoint tensors (already checked against stored_spec)."""
        raise NotImplementedError

    def dequantized_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """W [out, in] as dtype (default: the compute dtype), by the fast decoder."""
        raise NotImplementedError

    def reference_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """W [out, in] by the independent decoder of the stored tensors."""
        raise NotImplementedError

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """The fast product, after activation quantisation."""
        return F.linear(x, self.dequantized_weight(x.dtype))

    def set_kernel_dtype(self, dtype: torch.dtype) -> None:
        """Activation dtype of an integer kernel (bfloat16: fast; float32: exact). Others ignore it."""

    # -- shared --

    @classmethod
    def from_float(cls, w: torch.Tensor, *, act_quant: bool = False, **params) -> QuantLinear:
        """A module holding `w` [out, in] quantised (an empty one when `w` is on meta)."""
        m = cls(w.shape[1], w.shape[0], dtype=w.dtype, act_quant=act_quant, device=w.device, **params)
        if w.device.type != "meta":
            with torch.no_grad():
                m.quantize_(w.detach())
        return m

    @property
    def dtype(self) -> torch.dtype:
        return self.dtype_tag.dtype

    @property
    def weight(self) -> torch.Tensor:
        return self.dequantized_weight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_quant:
            x = fake_quant_fp8(x, ACT_BLOCK)
        return self.matmul(x)

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_quant:
            x = fake_quant_fp8(x, ACT_BLOCK)
        return F.linear(x, self.reference_weight(x.dtype))

    def grouped(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., G, I] -> [..., G, r]: group g through rows g*r .. (g+1)*r - 1 of W [G*r, I]."""
        g = x.shape[-2]
        w = self.dequantized_weight(x.dtype).view(g, -1, x.shape[-1])  # [G, r, I]
        return torch.einsum("...gi,gri->...gr", x, w)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        for leaf, t in self.stored_tensors().items():
            destination[prefix + leaf] = t if keep_vars else t.detach()

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        spec = self.stored_spec()
        found = {leaf: state_dict[prefix + leaf] for leaf in spec if prefix + leaf in state_dict}
        missing_keys.extend(prefix + leaf for leaf in spec if leaf not in found)
        if len(found) == len(spec):
            problem = check_stored(found, spec)
            if problem:
                error_msgs.append(f"{prefix}{problem}")
            else:
                self.load_stored({k: v.to(self.dtype_tag.device) for k, v in found.items()})

    def extra_repr(self) -> str:
        act = ", act_quant=fp8" if self.act_quant else ""
        shape = f"in_features={self.in_features}, out_features={self.out_features}"
        return f"{shape}, fmt={self.fmt}, dtype={self.dtype}{act}"


def check_stored(tensors: dict, spec: dict) -> str | None:
    """Why stored tensors (or TensorInfos: anything with .shape and .dtype) do not fit `spec`."""
    for leaf, (shape, dtypes) in spec.items():
        t = tensors[leaf]
        if t.dtype not in dtypes:
            want = " or ".join(str(d).removeprefix("torch.") for d in dtypes)
            return f"{leaf}: dtype {str(t.dtype).removeprefix('torch.')}, expected {want}"
        if tuple(t.shape) != tuple(shape):
            return f"{leaf}: shape {list(t.shape)}, expected {list(shape)}"
    return None


def _sn_sk(n: int, k: int, block: tuple[int, int]) -> tuple[int, int]:
    return ceil_div(n, block[0]), ceil_div(k, block[1])


# ---------------------------------------------------------------------------------------------- INT8


class Int8Linear(QuantLinear):
    """INT8 weight-only, one bf16 scale per output channel; CPU fast path aten._weight_int8pack_mm."""

    fmt = "int8"

    def __init__(
        self,
        in_features,
        out_features,
        *,
        dtype=torch.float32,
        act_quant=False,
        device=None,
        kernel_dtype=torch.bfloat16,
    ):
        super().__init__(in_features, out_features, dtype=dtype, act_quant=act_quant, device=device)
        self.kernel_dtype = kernel_dtype
        self.register_buffer(
            "qweight",
            torch.zeros(out_features, in_features, dtype=torch.int8, device=device),
            persistent=False,
        )
        self.register_buffer(
            "qscale", torch.ones(out_features, dtype=kernel_dtype, device=device), persistent=False
        )

    def quantize_(self, w):
        self._set(*quantize_int8(w))

    def _set(self, q: torch.Tensor, scale: torch.Tensor) -> None:
        # the scales are held in the kernel's dtype (bf16 values: exact in float32 too), so that
        # nothing converts them per call; inductor's lowering of the kernel cannot take a scale
        # computed inside a graph (torch 2.13)
        self.qweight, self.qscale = q.contiguous(), scale.to(self.kernel_dtype).contiguous()

    def stored_spec(self):
        return {
            "weight": (tuple(self.qweight.shape), (torch.int8,)),
            "scale": (tuple(self.qscale.shape), (SCALE_DTYPE,)),
        }

    def stored_tensors(self):
        return {"weight": self.qweight, "scale": self.qscale.to(SCALE_DTYPE)}

    def load_stored(self, tensors):
        self._set(tensors["weight"], tensors["scale"])

    def dequantized_weight(self, dtype=None):
        dtype = dtype or self.dtype
        return self.qweight.to(dtype) * self.qscale.to(dtype)[:, None]

    def reference_weight(self, dtype=None):
        return dequantize_int8(self.qweight, self.qscale, dtype or self.dtype)

    def matmul(self, x):
        return kernels.int8_linear(x, self.qweight, self.qscale, self.kernel_dtype)

    def set_kernel_dtype(self, dtype):
        self.kernel_dtype = dtype
        self.qscale = self.qscale.to(dtype)

    def grouped(self, x):
        g, r = x.shape[-2], self.out_features // x.shape[-2]
        outs = [
            kernels.int8_linear(
                x[..., i, :],
                self.qweight[i * r : (i + 1) * r],
                self.qscale[i * r : (i + 1) * r],
                self.kernel_dtype,
            )
            for i in range(g)
        ]
        return torch.stack(outs, dim=-2)


# ---------------------------------------------------------------------------------------------- INT4


class Int4Linear(QuantLinear):
    """INT4 weight-only, one bf16 scale per `group` along K; CPU fast path aten._weight_int4pack_mm_for_cpu.

    On a CPU whose int4 layout we can read back (kernels.tinygemm_layout) and with out_features a
    multiple of 16, `packed` is in the kernel's layout; otherwise it is the checkpoint's (low nibble
    first) and the product dequantises.
    """

    fmt = "int4"

    def __init__(
        self,
        in_features,
        out_features,
        *,
        dtype=torch.float32,
        act_quant=False,
        device=None,
        group_size=128,
        kernel_dtype=torch.bfloat16,
    ):
        super().__init__(in_features, out_features, dtype=dtype, act_quant=act_quant, device=device)
        self.group_size = group_size
        self.tinygemm, self.block_n, self.halves = False, 0, False  # set by _set, from where the weight lives
        self.register_buffer(
            "packed",
            torch.zeros(out_features, in_features // 2, dtype=torch.uint8, device=device),
            persistent=False,
        )
        self.register_buffer(
            "sz",
            torch.zeros(in_features // group_size, out_features, 2, dtype=kernel_dtype, device=device),
            persistent=False,
        )

    @classmethod
    def shape_problem(cls, out_features, in_features, act_quant=False, group_size=128, **params):
        if group_size not in INT4_GROUPS:
            return f"int4 group size {group_size} is not one of {INT4_GROUPS}"
        if in_features % group_size:
            return (
                f"int4 needs the input width to be a multiple of its group size {group_size}, "
                f"got {in_features}"
            )
        return super().shape_problem(out_features, in_features, act_quant)

    def quantize_(self, w):
        packed, scale = quantize_int4(w, self.group_size)
        self._set(packed, scale)

    def _set(self, packed: torch.Tensor, scale: torch.Tensor) -> None:
        """From the checkpoint's form (low nibble first, scale [N, K/g]) to the in-memory one."""
        layout = kernels.tinygemm_layout()
        self.tinygemm = layout is not None and packed.device.type == "cpu" and self.out_features % 16 == 0
        self.block_n, self.halves = layout if self.tinygemm else (0, False)
        self.sz = kernels.int4_scales_and_zeros(scale, self.sz.dtype)
        self.packed = kernels.pack_tinygemm(unpack_int4(packed)) if self.tinygemm else packed.contiguous()

    @property
    def layout(self) -> tuple[int, bool]:
        return self.block_n, self.halves

    def codes(self) -> torch.Tensor:
        """uint8 codes 0..15 [N, K] (code = q + 8)."""
        if self.tinygemm:
            return kernels.unpack_tinygemm(self.packed, self.block_n, self.halves)
        return unpack_int4(self.packed)

    def scale(self) -> torch.Tensor:
        return self.sz[..., 0].T.to(SCALE_DTYPE)  # [N, K/g], exact: the scales are bf16 values

    def stored_spec(self):
        n, k = self.out_features, self.in_features
        return {"weight": ((n, k // 2), (torch.uint8,)), "scale": ((n, k // self.group_size), (SCALE_DTYPE,))}

    def stored_tensors(self):
        if self.packed.is_meta:
            return {
                leaf: torch.empty(shape, dtype=dt[0], device="meta")
                for leaf, (shape, dt) in self.stored_spec().items()
            }
        return {"weight": pack_int4(self.codes()), "scale": self.scale().contiguous()}

    def load_stored(self, tensors):
        self._set(tensors["weight"], tensors["scale"])

    def dequantized_weight(self, dtype=None):
        return kernels.dequantize_int4_codes(self.codes(), self.sz[..., 0].T, dtype or self.dtype)

    def reference_weight(self, dtype=None):
        stored = self.stored_tensors()
        return dequantize_int4(stored["weight"], stored["scale"], dtype or self.dtype)

    def set_kernel_dtype(self, dtype):
        self.sz = self.sz.to(dtype)  # the kernel takes activations and scales in one dtype

    def matmul(self, x):
        if self.tinygemm and x.device.type == "cpu":
            return kernels.int4_linear(x, self.packed, self.group_size, self.sz, self.layout)
        return super().matmul(x)

    def grouped(self, x):
        g = x.shape[-2]
        r = self.out_features // g
        if not (self.tinygemm and x.device.type == "cpu" and r % self.block_n == 0):
            return super().grouped(x)
        # Rows in whole kernel blocks are a contiguous slice of the packed weight.
        outs = [
            kernels.int4_linear(
                x[..., i, :],
                self.packed[i * r : (i + 1) * r],
                self.group_size,
                self.sz[:, i * r : (i + 1) * r].contiguous(),
                self.layout,
                sz_computed=True,
            )
            for i in range(g)
        ]
        return torch.stack(outs, dim=-2)

    def extra_repr(self):
        return super().extra_repr() + f", group_size={self.group_size}"


# ------------------------------------------------------------------------------- FP8 / MX / HiF8


class _CodesLinear(QuantLinear):
    """Codes (uint8) + UE8M0 scales (uint8 codes, or float32); the product dequantises then F.linear."""

    elem: ClassVar[str]  # "e4m3", "e2m1" or "hif8"
    weight_dtype: ClassVar[torch.dtype]  # how the checkpoint stores the codes

    def __init__(self, in_features, out_features, *, dtype=torch.float32, act_quant=False, device=None):
        super().__init__(in_features, out_features, dtype=dtype, act_quant=act_quant, device=device)
        codes_k = in_features // 2 if self.elem == "e2m1" else in_features
        self.register_buffer(
            "codes", torch.zeros(out_features, codes_k, dtype=torch.uint8, device=device), persistent=False
        )
        self.register_buffer(
            "qscale", torch.full(self.scale_shape(), 127, dtype=torch.uint8, device=device), persistent=False
        )

    def scale_shape(self) -> tuple[int, int]:
        raise NotImplementedError

    def scale_dtypes(self) -> tuple[torch.dtype, ...]:
        return (E8M0,)

    def decoded(self, dtype: torch.dtype) -> torch.Tensor:
        """The codes' values [N, K] before scaling."""
        return kernels.decode8(self.codes, self.elem, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        warn_reference_path(self.fmt, x.device)  # once per format and device type; silent on the CPU
        return super().forward(x)

    def _set(self, q: torch.Tensor, scale: torch.Tensor) -> None:
        self.codes = q.contiguous().view(torch.uint8)
        self.qscale = (
            scale.contiguous().view(torch.uint8) if scale.dtype == E8M0 else scale.float().contiguous()
        )

    def stored_spec(self):
        return {
            "weight": (tuple(self.codes.shape), (self.weight_dtype,)),
            "scale": (self.scale_shape(), self.scale_dtypes()),
        }

    def stored_tensors(self):
        scale = self.qscale.view(E8M0) if self.qscale.dtype == torch.uint8 else self.qscale
        return {"weight": self.codes.view(self.weight_dtype), "scale": scale}

    def load_stored(self, tensors):
        self._set(tensors["weight"], tensors["scale"])


class _BlockLinear(_CodesLinear):
    """8-bit codes with one scale per 128 x 128 block; a subclass names its block quantiser pair."""

    quantize_blocks: ClassVar = None  # (w, block) -> (codes, scale)
    dequantize_blocks: ClassVar = None  # (codes, scale, dtype, block) -> w

    def scale_shape(self):
        return _sn_sk(self.out_features, self.in_features, FP8_BLOCK)

    def quantize_(self, w):
        self._set(*type(self).quantize_blocks(w, FP8_BLOCK))

    def dequantized_weight(self, dtype=None):
        dtype = dtype or self.dtype
        return kernels.scale_blocks(self.decoded(dtype), kernels.scale_values(self.qscale, dtype), FP8_BLOCK)

    def reference_weight(self, dtype=None):
        s = self.stored_tensors()
        return type(self).dequantize_blocks(s["weight"], s["scale"], dtype or self.dtype, FP8_BLOCK)


class FP8BlockLinear(_BlockLinear):
    """FP8 E4M3 with one scale per 128 x 128 block: DeepSeek's storage of every dense projection."""

    fmt, elem, weight_dtype = "fp8", "e4m3", E4M3
    quantize_blocks, dequantize_blocks = (
        staticmethod(quantize_fp8_blocks),
        staticmethod(dequantize_fp8_blocks),
    )

    def scale_dtypes(self):
        return (E8M0, torch.float32)  # V3 stored float32 amax / 448

    def forward(self, x):
        # with act_quant on a Hopper GPU: DeepSeek's own GEMM (E4M3 x E4M3, block scales) in cuBLAS
        if self.act_quant and kernels.fp8_native_ok(x, self.out_features, self.in_features):
            y = kernels.fp8_block_linear(x, self.codes, self.qscale)
            if y is not None:
                return y
        return super().forward(x)


class _MXLinear(_CodesLinear):
    """OCP microscaling: one UE8M0 scale per 32 along K."""

    @classmethod
    def shape_problem(cls, out_features, in_features, act_quant=False, **params):
        if in_features % MX_BLOCK:
            return f"{cls.fmt} needs the input width to be a multiple of {MX_BLOCK}, got {in_features}"
        return super().shape_problem(out_features, in_features, act_quant)

    def scale_shape(self):
        return self.out_features, self.in_features // MX_BLOCK

    def quantize_(self, w):
        self._set(*quantize_mx(w, self.elem, MX_BLOCK))

    def dequantized_weight(self, dtype=None):
        dtype = dtype or self.dtype
        return kernels.scale_groups(self.decoded(dtype), kernels.scale_values(self.qscale, dtype))

    def reference_weight(self, dtype=None):
        s = self.stored_tensors()
        return dequantize_mx(s["weight"], s["scale"], self.elem, dtype or self.dtype)


class MXFP8Linear(_MXLinear):
    """MXFP8: E4M3 elements, a UE8M0 scale per 32 (Ascend 950's native FP8)."""

    fmt, elem, weight_dtype = "mxfp8", "e4m3", E4M3


class MXFP4Linear(_MXLinear):
    """MXFP4: E2M1 elements two per byte, a UE8M0 scale per 32 (DeepSeek V4's routed experts)."""

    fmt, elem, weight_dtype = "mxfp4", "e2m1", torch.int8

    def decoded(self, dtype):
        return kernels.decode_fp4(self.codes, dtype)


class HiF8Linear(_BlockLinear):
    """HiFloat8 codes with a UE8M0 scale per 128 x 128 block (hif8.py)."""

    fmt, elem, weight_dtype = "hif8", "hif8", torch.uint8
    quantize_blocks, dequantize_blocks = (
        staticmethod(quantize_hif8_blocks),
        staticmethod(dequantize_hif8_blocks),
    )


FORMATS: dict[str, type[QuantLinear]] = {
    cls.fmt: cls for cls in (Int8Linear, Int4Linear, FP8BlockLinear, MXFP8Linear, MXFP4Linear, HiF8Linear)
}
