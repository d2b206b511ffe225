"""Parameter accounting: totals, per-token (active) counts, a per-component breakdown and bytes.

Everything is read from the instantiated model (`Transformer(cfg)` on the meta device, so no memory
is allocated): `named_parameters()` gives the counts, the persistent buffers (the hash-routing tables
`tid2eid`) count in the checkpoint bytes only, and `official_storage` says how the release stores
each tensor. An independent closed-form formula in tests/test_params.py checks every flavor.

Conventions (docs/params.md has the full text and how they reproduce DeepSeek's figures):

* total:   every parameter of the main model, embedding and head included, MTP excluded;
* mtp:     the MTP blocks' own parameters (they share the main embedding and head);
* active:  what the main model uses per token: everything except the routed experts, plus the
           `n_activated_experts` routed experts of each layer (the shared expert is already in),
           the whole head, and ONE embedding row (dim parameters), since a lookup reads one row;
* active_mtp: the MTP blocks' own per-token parameters (their routed experts top-k only);
* active_blocks_with_mtp: active - head - embedding row + active_mtp, i.e. every per-token parameter
           except the embedding and the head (main stack incl. final norm and hc_head, plus MTP).

Bytes: at the release's own dtypes (FP4 routed experts + one UE8M0 byte per 32 inputs, FP8 linears
+ one byte per 128 x 128 block, bf16/fp32 elsewhere, int64 hash tables) and at bf16 (2 bytes per
parameter, parameters only). GB = 1e9 bytes.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from .checkpoint.layouts import official_storage
from .checkpoint.official import stored_nbytes
from .config import ModelConfig
from .model import Transformer
from .units import format_bytes, format_count

# Breakdown rows, in display order. Attention = the attn.* tensors of a block minus its compressor
# and indexer (wq_a, q_norm, wq_b, wkv, kv_norm, wo_a, wo_b, attn_sink). Norms = the block norms
# (attn_norm, ffn_norm), the final norm and the MTP enorm/hnorm/norm; q_norm and kv_norm belong to
# attention, the compressors' norms to their compressor. mHC = every hc_* tensor incl. hc_head.
KINDS = ("window", "csa", "hca")
COMPONENTS = (
    "attention_window",
    "attention_csa",
    "attention_hca",
    "compressor",
    "indexer",
    "routed_experts",
    "shared_experts",
    "router",
    "mhc",
    "norms",
    "embedding",
    "head",
    "mtp_proj",
)
COMPONENT_LABELS = {
    "attention_window": "attention (window)",
    "attention_csa": "attention (csa)",
    "attention_hca": "attention (hca)",
    "compressor": "compressor",
    "indexer": "indexer (incl. its compressor)",
    "routed_experts": "routed experts",
    "shared_experts": "shared experts",
    "router": "router (gate weight + bias)",
    "mhc": "mHC (hc_* incl. hc_head)",
    "norms": "norms",
    "embedding": "embedding",
    "head": "head",
    "mtp_proj": "MTP e_proj + h_proj",
}


@dataclass(frozen=True)
class ParamReport:
    """Parameter counts and bytes of one config; see the module docstring for the conventions."""

    name: str
    total: int
    mtp: int
    active: int
    active_mtp: int
    active_blocks_with_mtp: int
    embedding_row: int  # parameters of the embedding counted in `active` (one row = dim)
    n_activated_experts: int
    n_routed_experts: int
    layer_kinds: dict[str, int]  # main layers per attention kind
    mtp_layer_kinds: dict[str, int]
    breakdown: dict[str, int]  # main model, by COMPONENTS (zeros kept)
    mtp_breakdown: dict[str, int]
    bytes_release: int  # main model at the release's dtypes, scales and hash tables included
    bytes_bf16: int  # 2 * total
    mtp_bytes_release: int
    mtp_bytes_bf16: int  # 2 * mtp
    bytes_by_storage: dict[str, int] = field(default_factory=dict)  # main: "fp4", "fp8", ... -> bytes
    mtp_bytes_by_storage: dict[str, int] = field(default_factory=dict)

    @property
    def total_with_mtp(self) -> int:
        return self.total + self.mtp

    @property
    def bytes_release_with_mtp(self) -> int:
        return self.bytes_release + self.mtp_bytes_release

    @property
    def bytes_bf16_with_mtp(self) -> int:
        return self.bytes_bf16 + self.mtp_bytes_bf16

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict: every field plus the derived totals (all counts are ints)."""
        d = dataclasses.asdict(self)
        d.update(
            total_with_mtp=self.total_with_mtp,
            bytes_release_with_mtp=self.bytes_release_with_mtp,
            bytes_bf16_with_mtp=self.bytes_bf16_with_mtp,
            conventions=CONVENTIONS,
        )
        return d


CONVENTIONS = {
    "total": "all main-model parameters, embedding and head included, MTP excluded",
    "mtp": "the MTP blocks' own parameters; the embedding and head are shared with the main model",
    "active": "main model per token: all but routed experts, plus n_activated_experts routed experts per "
    "layer (shared expert included), the whole head and one embedding row (dim parameters)",
    "active_mtp": "the MTP blocks' own per-token parameters (top-k routed experts only)",
    "active_blocks_with_mtp": "active - head - embedding row + active_mtp (no embedding, no head)",
    "bytes_release": "release dtypes: fp4 experts + 1 B/32 inputs, fp8 + 1 B per 128x128 block, bf16, fp32, "
    "int64 hash tables",
    "bytes_bf16": "2 bytes per parameter (parameters only)",
}


# ---------------------------------------------------------------------------------- building


_INIT_FUNCS = ("uniform_", "normal_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_",
               "xavier_uniform_", "xavier_normal_", "constant_", "zeros_", "ones_")


@contextlib.contextmanager
def _skip_torch_init() -> Iterator[None]:
    """Make torch.nn.init's fillers no-ops while building on meta.

    Meta tensors hold no values, yet nn.Linear / nn.Embedding still run their random init through the
    dispatcher; that is ~70% of the build time of v4-pro (~13 s -> ~4 s). The model code is untouched
    (transformers' `no_init_weights` does the same). Not thread-safe: build, then restore.
    """
    init = torch.nn.init
    saved = {n: getattr(init, n) for n in _INIT_FUNCS}
    try:
        for n in _INIT_FUNCS:
            setattr(init, n, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for n, f in saved.items():
            setattr(init, n, f)


def build_meta_model(cfg: ModelConfig) -> torch.nn.Module:
    """`Transformer(cfg)` on the meta device: shapes and names only, no memory."""
    with _skip_torch_init(), torch.device("meta"):
        return Transformer(cfg)


# ---------------------------------------------------------------------------------- bytes


def release_bytes(name: str, shape: tuple[int, ...]) -> int:
    """Bytes of tensor `name` of `shape` as the official release stores it, scales included (the
    checkpoint writer's own count, `official.stored_nbytes`)."""
    kind = official_storage(name)
    if kind in ("fp4", "fp8") and len(shape) != 2:
        raise ValueError(f"{name}: {kind} storage needs a 2-D [out, in] weight; got shape {tuple(shape)}")
    return stored_nbytes(name, tuple(shape))


# ---------------------------------------------------------------------------------- counting


def _component(rel: str, kind: str) -> str | None:
    """Component of a block tensor (name relative to `layers.N.` / `mtp.N.`); None if unknown."""
    if rel.startswith("attn.compressor."):
        return "compressor"
    if rel.startswith("attn.indexer."):
        return "indexer"
    if rel.startswith("attn."):
        return f"attention_{kind}"
    if rel.startswith("ffn.experts."):
        return "routed_experts"
    if rel.startswith("ffn.shared_experts."):
        return "shared_experts"
    if rel.startswith("ffn.gate."):
        return "router"
    if rel.startswith("hc_"):
        return "mhc"
    if rel in ("attn_norm.weight", "ffn_norm.weight", "enorm.weight", "hnorm.weight", "norm.weight"):
        return "norms"
    if rel.startswith(("e_proj.", "h_proj.")):
        return "mtp_proj"
    return None


_TOP_LEVEL = {"embed.weight": "embedding", "head.weight": "head", "norm.weight": "norms"}


def _locate(name: str, cfg: ModelConfig) -> tuple[str, str | None, str]:
    """name -> (scope "main" | "mtp", block key like "layers.3" or None, component)."""
    parts = name.split(".")
    if parts[0] in ("layers", "mtp") and len(parts) > 2 and parts[1].isdigit():
        scope = "mtp" if parts[0] == "mtp" else "main"
        index = int(parts[1]) + (cfg.n_layers if scope == "mtp" else 0)
        comp = _component(".".join(parts[2:]), cfg.layer_kind(index))
        block = f"{parts[0]}.{parts[1]}"
    else:
        scope, block = "main", None
        comp = _TOP_LEVEL.get(name) or ("mhc" if name.startswith("hc_head_") else None)
    if comp is None:
        raise ValueError(
            f"parameter {name!r} fits no component of the breakdown; extend trillion/params.py "
            f"(_component / _TOP_LEVEL) when the model gains a tensor"
        )
    return scope, block, comp


def count_params(cfg: ModelConfig) -> ParamReport:
    """Count the parameters of `Transformer(cfg)` (built on meta) under the conventions above."""
    # A deep copy: the cached report's dicts must not be shared with callers.
    return dataclasses.replace(copy.deepcopy(_count(cfg)), name=cfg.name)


@functools.lru_cache(maxsize=16)
def _count(cfg: ModelConfig) -> ParamReport:  # ModelConfig is frozen, hence hashable
    model = build_meta_model(cfg)
    return count_module(model, cfg)


def count_module(model: torch.nn.Module, cfg: ModelConfig) -> ParamReport:
    """The report of an already-built model (any device) whose names are DeepSeek's."""
    comps = {"main": dict.fromkeys(COMPONENTS, 0), "mtp": dict.fromkeys(COMPONENTS, 0)}
    nbytes = {"main": defaultdict(int), "mtp": defaultdict(int)}
    experts: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))  # block -> expert -> params
    embedding_row = 0

    params = dict(model.named_parameters())
    for name, p in params.items():
        scope, block, comp = _locate(name, cfg)
        n = p.numel()
        comps[scope][comp] += n
        nbytes[scope][official_storage(name)] += release_bytes(name, tuple(p.shape))
        if comp == "routed_experts":
            experts[block][int(name.split(".")[4])] += n  # layers.N.ffn.experts.E.wX.weight
        if comp == "embedding":
            embedding_row = p.shape[-1]  # a lookup reads one row of [vocab, dim]
    # Persistent buffers (the hash tables) are in the checkpoint but are not parameters.
    for name, b in model.state_dict(keep_vars=True).items():
        if name not in params:
            scope = "mtp" if name.startswith("mtp.") else "main"
            nbytes[scope][official_storage(name)] += release_bytes(name, tuple(b.shape))

    k = cfg.n_activated_experts
    top_k = {"main": 0, "mtp": 0}
    for block, sizes in experts.items():
        top_k["mtp" if block.startswith("mtp.") else "main"] += sum(sorted(sizes.values(), reverse=True)[:k])

    main, mtp = comps["main"], comps["mtp"]
    total, mtp_total = sum(main.values()), sum(mtp.values())
    active = total - main["routed_experts"] + top_k["main"] - main["embedding"] + embedding_row
    active_mtp = mtp_total - mtp["routed_experts"] + top_k["mtp"]
    kinds = [cfg.layer_kind(i) for i in range(cfg.n_layers + cfg.n_mtp_layers)]
    return ParamReport(
        name=cfg.name,
        total=total,
        mtp=mtp_total,
        active=active,
        active_mtp=active_mtp,
        active_blocks_with_mtp=active - main["head"] - embedding_row + active_mtp,
        embedding_row=embedding_row,
        n_activated_experts=k,
        n_routed_experts=cfg.n_routed_experts,
        layer_kinds={kind: kinds[: cfg.n_layers].count(kind) for kind in KINDS},
        mtp_layer_kinds={kind: kinds[cfg.n_layers :].count(kind) for kind in KINDS},
        breakdown=main,
        mtp_breakdown=mtp,
        bytes_release=sum(nbytes["main"].values()),
        bytes_bf16=2 * total,
        mtp_bytes_release=sum(nbytes["mtp"].values()),
        mtp_bytes_bf16=2 * mtp_total,
        bytes_by_storage=dict(sorted(nbytes["main"].items())),
        mtp_bytes_by_storage=dict(sorted(nbytes["mtp"].items())),
    )


# ---------------------------------------------------------------------------------- formatting






__all__ = [
    "COMPONENTS",
    "COMPONENT_LABELS",
    "CONVENTIONS",
    "ParamReport",
    "build_meta_model",
    "count_module",
    "count_params",
    "format_bytes",
    "format_count",
    "markdown_table",
    "release_bytes",
]


def markdown_table(reports: list[ParamReport]) -> str:
    """One markdown row per report (docs/params.md; benchmarks/params_table.py prints it)."""
    head = (
        "| flavor | total | MTP | total + MTP | active | active blocks + MTP "
        "| release dtypes (main + MTP) | bf16 (main + MTP) |"
    )
    rows = [head, "|" + "---|" * 8]
    for r in reports:
        cells = [
            f"`{r.name}`",
            format_count(r.total, 2),
            format_count(r.mtp, 2),
            format_count(r.total_with_mtp, 2),
            format_count(r.active, 2),
            format_count(r.active_blocks_with_mtp, 2),
            format_bytes(r.bytes_release_with_mtp),
            format_bytes(r.bytes_bf16_with_mtp),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)
