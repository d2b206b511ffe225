"""How the state pool stores its vectors: float, or the release's FP8 / FP4 with block scales.

Every vector of the state (a window-ring slot, a compressed entry, an indexer key) lives in one
`Store`: tensors with the same leading dims (slots and ring rows, or flat page rows), addressed like
a tensor (`store.read(index)`, `store.write(index, values)`). Formats (`kv_dtype`):

* "auto" (the model's dtype), "bf16", "float32": one tensor of that dtype;
* "fp8", V4's release storage (V4 report section 2.3; the rounding of DeepSeek's inference code,
  which `trillion.model.numerics` fakes when `cfg.fake_quant` is on):
  - KV vectors: the non-rope dims in FP8 E4M3 with one UE8M0 scale byte per 64 (`KV_FP8_BLOCK`),
    the rope dims in BF16;
  - indexer keys: FP4 E2M1, two codes per byte, with one UE8M0 scale byte per 32 (`FP4_BLOCK`).
  Encoding is exactly `fake_quant_fp8(x, 64)` / `fake_quant_fp4(x, 32)` (same amax floors, same
  power-of-two scales, round to nearest even), so a fake-quant model's vectors, already on those
  grids, are stored without loss (tests/engine/test_long_state.py). The rope dims are stored in
  bf16: a bf16 model's are unchanged; a float32 model's are rounded (the release keeps them bf16).

Allocation is lazy: tensors come from `torch.empty`, whose untouched memory the OS does not back,
so the resident size grows with the pages in use; `zero_` clears rows before they are handed out
(a masked row is multiplied by probability 0, so it must at least be finite).

Shapes: L... leading dims, K vector width, R rope dims, G = (K - R) / 64 scales, d index key width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import ceil_div
from ..errors import UserError
from ..formats import e8m0
from ..formats.blocks import FP4_AMAX_FLOOR, FP4_MAX, FP8_AMAX_FLOOR, FP8_MAX
from ..formats.codec import decode as decode_codes
from ..formats.codec import encode as encode_codes
from ..formats.mx import pack_fp4, unpack_fp4
from ..formats.scales import ue8m0_scale
from ..model.numerics import FP4_BLOCK, KV_FP8_BLOCK

KV_DTYPES = ("auto", "bf16", "float32", "fp8")
FLOAT_DTYPES = {"bf16": torch.bfloat16, "float32": torch.float32}


def check_kv_dtype(kv_dtype: str) -> str:
    if kv_dtype not in KV_DTYPES:
        raise UserError(f"kv_dtype = {kv_dtype!r}; expected one of {', '.join(KV_DTYPES)}")
    return kv_dtype


def check_fp8_config(cfg) -> None:
    """FP4 keys pack two per byte: the index head dim must be even. (A last scale block may be
    partial: it gets its own scale, as `trillion kv` counts ceil(n / block) scale bytes.)"""
    has_csa = any(cfg.is_sparse(i) for i in range(cfg.n_layers + cfg.n_mtp_layers))
    if has_csa and cfg.index_head_dim % 2:
        raise UserError(f"kv_dtype='fp8' needs an even index_head_dim (two FP4 codes per byte), got {cfg.index_head_dim}")


def take(t: torch.Tensor, index) -> torch.Tensor:
    """t[index]; a tensor of row numbers (page rows, slots) goes through `index_select`, which gathers
    rows 1.5-2x faster than advanced indexing (a decode step reads ~15 times)."""
    if isinstance(index, torch.Tensor) and index.dtype == torch.long:
        return t.index_select(0, index.flatten()).view(*index.shape, *t.shape[1:])
    return t[index]


class Store:
    """Vectors [*lead, width] in one format; `dtype` is what `read` returns (the compute dtype)."""

    def __init__(self, lead: tuple[int, ...], width: int, dtype: torch.dtype, device, parts: dict[str, tuple]):
        self.lead, self.width, self.dtype = lead, width, dtype
        self.parts = {name: torch.empty(*lead, n, dtype=dt, device=device) for name, (n, dt) in parts.items()}

    def zero_(self, index=slice(None)) -> None:
        for t in self.parts.values():
            t[index] = 0

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.parts.values())

    def row_bytes(self) -> int:
        """Bytes of one stored vector."""
        return sum(t.shape[-1] * t.element_size() for t in self.parts.values())

    def read(self, index) -> torch.Tensor:
        raise NotImplementedError

    def write(self, index, values: torch.Tensor) -> None:
        raise NotImplementedError

    def round(self, values: torch.Tensor) -> torch.Tensor:
        """values [..., width] as `read` would return them once written."""
        raise NotImplementedError

    def copy_(self, dst, src) -> None:
        """Copy stored rows as they are (forking a sequence)."""
        for t in self.parts.values():
            t[dst] = t[src]


class FloatStore(Store):
    def __init__(self, lead, width, dtype, device, storage: torch.dtype):
        super().__init__(lead, width, dtype, device, {"values": (width, storage)})
        self.values = self.parts["values"]

    def read(self, index) -> torch.Tensor:
        return take(self.values, index).to(self.dtype)

    def write(self, index, values: torch.Tensor) -> None:
        self.values[index] = values.to(self.values.dtype)

    def round(self, values: torch.Tensor) -> torch.Tensor:
        return values.to(self.values.dtype).to(self.dtype)


def fp8_encode(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., n] -> (float8_e4m3fn codes [..., n], UE8M0 scale bytes [..., ceil(n / 64)]): the
    rounding of `fake_quant_fp8(x, block=64)` (amax floor 1e-4, scale 2**ceil(log2(amax / 448))).
    A last partial block has its own scale (zeros pad it, as `trillion kv` counts ceil(n / 64))."""
    n = x.shape[-1]
    pad = -n % KV_FP8_BLOCK
    xb = F.pad(x.float(), (0, pad)).unflatten(-1, (-1, KV_FP8_BLOCK))  # [..., G, 64]
    scale = ue8m0_scale(xb.abs().amax(dim=-1).clamp(min=FP8_AMAX_FLOOR), FP8_MAX)  # [..., G] uint8
    # |x| / s <= 448 by the scale's choice, so torch's cast (nearest, ties to even) never overflows
    codes = (xb / e8m0.decode(scale)[..., None]).to(torch.float8_e4m3fn)
    return codes.flatten(-2)[..., :n], scale


def fp8_decode(codes: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    n, s = codes.shape[-1], e8m0.decode(scale)
    if n % KV_FP8_BLOCK:  # a partial last block
        return (codes.float() * s.repeat_interleave(KV_FP8_BLOCK, dim=-1)[..., :n]).to(dtype)
    return (codes.float().unflatten(-1, (-1, KV_FP8_BLOCK)) * s[..., None]).flatten(-2).to(dtype)


def fp4_encode(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., n] (n even) -> (packed uint8 [..., n / 2], UE8M0 scale bytes [..., ceil(n / 32)]): the
    rounding of `fake_quant_fp4(x, block=32)`; element 2j in the low nibble (`pack_fp4`)."""
    n = x.shape[-1]
    xb = F.pad(x.float(), (0, -n % FP4_BLOCK)).unflatten(-1, (-1, FP4_BLOCK))
    scale = ue8m0_scale(xb.abs().amax(dim=-1).clamp(min=FP4_AMAX_FLOOR), FP4_MAX)
    codes = encode_codes(xb / e8m0.decode(scale)[..., None], "e2m1").flatten(-2)[..., :n]
    return pack_fp4(codes).view(torch.uint8), scale


# Both values of every packed byte: one lookup decodes two FP4 elements.
_PAIRS: dict[torch.device, torch.Tensor] = {}


def _pair_table(device) -> torch.Tensor:
    if device not in _PAIRS:
        byte = torch.arange(256, dtype=torch.int32, device=device).to(torch.uint8)
        _PAIRS[device] = decode_codes(unpack_fp4(byte[:, None]), "e2m1")  # [256, 2]
    return _PAIRS[device]


def fp4_decode(packed: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    pairs = _pair_table(packed.device)
    v = pairs.index_select(0, packed.reshape(-1).int()).view(*packed.shape[:-1], -1)  # [..., n]
    n, s = v.shape[-1], e8m0.decode(scale)
    if n % FP4_BLOCK:
        return (v * s.repeat_interleave(FP4_BLOCK, dim=-1)[..., :n]).to(dtype)
    return (v.unflatten(-1, (-1, FP4_BLOCK)) * s[..., None]).flatten(-2).to(dtype)


class FP8KVStore(Store):
    """KV vectors: non-rope dims FP8 E4M3 + a UE8M0 scale per 64, rope dims bf16."""

    def __init__(self, lead, width, dtype, device, rope_dim: int):
        nope = width - rope_dim
        super().__init__(lead, width, dtype, device, {
            "nope": (nope, torch.float8_e4m3fn), "scale": (ceil_div(nope, KV_FP8_BLOCK), torch.uint8),
            "rope": (rope_dim, torch.bfloat16)})
        self.nope = nope

    def read(self, index) -> torch.Tensor:
        p = self.parts
        nope = fp8_decode(take(p["nope"], index), take(p["scale"], index), self.dtype)
        return torch.cat((nope, take(p["rope"], index).to(self.dtype)), dim=-1)

    def write(self, index, values: torch.Tensor) -> None:
        codes, scale = fp8_encode(values[..., : self.nope])
        self.parts["nope"][index] = codes
        self.parts["scale"][index] = scale
        self.parts["rope"][index] = values[..., self.nope :].to(torch.bfloat16)

    def round(self, values: torch.Tensor) -> torch.Tensor:
        nope = fp8_decode(*fp8_encode(values[..., : self.nope]), self.dtype)
        return torch.cat((nope, values[..., self.nope :].to(torch.bfloat16).to(self.dtype)), dim=-1)


class FP4KeyStore(Store):
    """Indexer keys: FP4 E2M1, two per byte, + a UE8M0 scale per 32."""

    def __init__(self, lead, width, dtype, device):
        super().__init__(lead, width, dtype, device, {
            "codes": (width // 2, torch.uint8), "scale": (ceil_div(width, FP4_BLOCK), torch.uint8)})

    def read(self, index) -> torch.Tensor:
        return fp4_decode(take(self.parts["codes"], index), take(self.parts["scale"], index), self.dtype)

    def write(self, index, values: torch.Tensor) -> None:
        codes, scale = fp4_encode(values)
        self.parts["codes"][index] = codes
        self.parts["scale"][index] = scale

    def round(self, values: torch.Tensor) -> torch.Tensor:
        return fp4_decode(*fp4_encode(values), self.dtype)


def kv_store(kv_dtype: str, lead, width: int, dtype: torch.dtype, device, rope_dim: int) -> Store:
    """A store of KV vectors (window ring or compressed entries)."""
    if kv_dtype == "fp8":
        return FP8KVStore(lead, width, dtype, device, rope_dim)
    return FloatStore(lead, width, dtype, device, FLOAT_DTYPES.get(kv_dtype, dtype))


def key_store(kv_dtype: str, lead, width: int, dtype: torch.dtype, device) -> Store:
    """A store of indexer keys."""
    if kv_dtype == "fp8":
        return FP4KeyStore(lead, width, dtype, device)
    return FloatStore(lead, width, dtype, device, FLOAT_DTYPES.get(kv_dtype, dtype))
