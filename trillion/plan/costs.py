"""What a model costs a deployment: weight bytes by how they are split, per-token matmul work, and
the attention state and work of one sequence at a context. The planner (planner.py) only reads this.

Two families, one interface:

* V4 (`v4_costs(cfg)`): tensors from `Transformer(cfg)` built on meta (trillion.params), their release
  storage from trillion.checkpoint.layouts, activated parameters from `trillion.params.count_module`,
  attention state and decode FLOPs from trillion.kvcost. Needs torch (imported when called).
* V3 / R1 (`v3_costs(V3Config())`): the published MLA model the serving figures were measured on,
  tensors from its config.json (kvcost.V3Config), no torch.

Every weight tensor has a share (docs/plan.md, "Layout"):
  expert      routed experts: split over the ep = world ranks (plus redundant replicas);
  tp          query-head projections (V4: wq_b, wo_a, wo_b, sinks; V3: q_b, kv_b, o), embedding and
              head: split over the tp ranks of a dp group;
  replicated  everything else (the shared KV projection, compressors, indexer, shared expert, router,
              norms, mHC): a full copy on every rank.

Precisions (`--precision`): which format the linears (the weights the release stores in FP8 / FP4,
trillion.quant.schemes' "dense" and "experts" roles) take; other tensors keep the release's storage,
except bf16 / fp32, which cast every parameter.

Legend: N context tokens, L prompt length, E routed experts, k experts per token, H heads.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from ..config import ModelConfig, ceil_div
from ..errors import UserError
from ..kvcost import (
    V3,
    V3Config,
    compressor_state_bytes,
    index_key_bytes,
    kv_vector_bytes,
    state_breakdown,
    v4_attention_flops,
)

PRECISIONS = ("release", "fp8", "mxfp4", "hif8", "int8", "bf16", "fp32")
SHARES = ("expert", "tp", "replicated")
# (dense linears, routed experts) format per precision; "release" is DeepSeek's V4 checkpoint.
WEIGHT_FORMATS = {
    "release": ("fp8", "mxfp4"),
    "fp8": ("fp8", "fp8"),
    "mxfp4": ("mxfp4", "mxfp4"),
    "hif8": ("hif8", "hif8"),
    "int8": ("int8", "int8"),
    "bf16": ("bf16", "bf16"),
    "fp32": ("fp32", "fp32"),
}
# The matmul unit a weight format runs on (Hardware.flops keys).
COMPUTE_FORMAT = {"fp8": "fp8", "mxfp4": "fp4", "hif8": "hif8", "int8": "int8", "bf16": "bf16", "fp32": "fp32"}
BLOCK = 128  # FP8 / HiF8 block scales cover 128 x 128 (one UE8M0 byte each)
MX_GROUP = 32  # MXFP4: one UE8M0 byte per 32 inputs
ELEMENT_BYTES = {"bf16": 2, "fp32": 4, "int64": 8}


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise UserError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")


def state_precision(precision: str) -> str:
    """Attention state storage: the release's (V4: FP8 KV, FP4 indexer keys) unless the run is bf16/fp32."""
    return precision if precision in ("bf16", "fp32") else "release"


def linear_bytes(fmt: str, out: int, inp: int) -> int:
    """Bytes of one [out, in] weight stored in `fmt`, scales included (trillion.quant.linear's layouts)."""
    if fmt in ("fp8", "hif8"):
        return out * inp + ceil_div(out, BLOCK) * ceil_div(inp, BLOCK)
    if fmt == "mxfp4":
        return out * ceil_div(inp, 2) + out * ceil_div(inp, MX_GROUP)
    if fmt == "int8":
        return out * inp + 2 * out  # one bf16 scale per output channel
    return out * inp * ELEMENT_BYTES[fmt]


@dataclass(frozen=True)
class Tensor:
    """One stored tensor: name, shape, release storage ('fp4', 'fp8', 'bf16', 'fp32', 'int64'), share."""

    name: str
    shape: tuple[int, ...]
    storage: str
    share: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def nbytes(self, precision: str) -> int:
        if self.storage in ("fp8", "fp4"):  # a linear the precision re-formats
            dense_fmt, expert_fmt = WEIGHT_FORMATS[precision]
            return linear_bytes(expert_fmt if self.share == "expert" else dense_fmt, *self.shape)
        if self.storage != "int64" and precision in ("bf16", "fp32"):
            return self.numel * ELEMENT_BYTES[precision]
        return self.numel * ELEMENT_BYTES[self.storage]


@dataclass(frozen=True)
class ModelCosts:
    """The deployment-relevant numbers of one model (see the module docstring).

    weights[precision][share]: bytes held, main model + MTP block(s), embedding included.
    embedding[precision]: bytes of the embedding (in the tp share; decode reads only its rows).
    matmul[share]: parameters one token multiplies with in the main model ("expert": its top-k routed
    experts); 2 x their sum is the weight FLOPs. mtp_matmul: the same for one MTP block pass.
    """

    name: str
    family: str
    cfg: object  # ModelConfig or V3Config: what check_layout and the state formulas read
    max_context: int
    dim: int
    vocab_size: int
    hc_mult: int
    n_heads: int
    n_layers: int
    n_mtp_layers: int
    n_moe_layers: int  # main layers with routed experts
    n_routed_experts: int
    top_k: int
    expert_params: int  # one routed expert of one layer
    params: int  # main + MTP parameters held
    weights: dict[str, dict[str, int]]
    embedding: dict[str, int]
    mtp_weights: dict[str, dict[str, int]]  # the MTP block's own share of `weights`
    matmul: dict[str, int]
    mtp_matmul: int
    notes: tuple[str, ...] = field(default=())

    # ------------------------------------------------------------------ per context (family-specific)

    def state_bytes(self, n: int, precision: str) -> int:
        """Attention state one sequence holds at n tokens, main layers + MTP blocks."""
        raise NotImplementedError

    def state_read_bytes(self, n: int, precision: str, mtp: bool = False) -> int:
        """State bytes one decode step reads for one sequence at context n (main, or the MTP blocks)."""
        raise NotImplementedError

    def attention_flops(self, n: int, mtp: bool = False) -> tuple[int, int]:
        """(split by tp, replicated) attention FLOPs of one decoded token at context n."""
        raise NotImplementedError

    def prefill_attention_flops(self, length: int) -> tuple[int, int]:
        """(split by tp, replicated) attention FLOPs of a whole prompt of `length` tokens (causal)."""
        raise NotImplementedError

    def indexer_scores(self, n: int) -> int:
        """Indexer scores one prefill query writes before its top-k at context n (V4 CSA), 0 for V3."""
        return 0


def _account(
    tensors: Iterable[Tensor], mtp_prefix: str
) -> tuple[int, dict[str, dict[str, int]], dict[str, int], dict[str, dict[str, int]], int]:
    """(params, weights, embedding, mtp_weights, tp matmul params of the main model) over all precisions."""
    weights = {p: dict.fromkeys(SHARES, 0) for p in PRECISIONS}
    mtp_weights = {p: dict.fromkeys(SHARES, 0) for p in PRECISIONS}
    embedding = dict.fromkeys(PRECISIONS, 0)
    params = tp_matmul = 0
    for t in tensors:
        params += t.numel
        is_mtp = t.name.startswith(mtp_prefix)
        is_embedding = t.name.endswith("embed.weight") or t.name.endswith("embed_tokens.weight")
        for p in PRECISIONS:
            b = t.nbytes(p)
            weights[p][t.share] += b
            if is_mtp:
                mtp_weights[p][t.share] += b
            if is_embedding:
                embedding[p] += b
        if t.share == "tp" and not is_mtp and not is_embedding and len(t.shape) == 2:
            tp_matmul += t.numel
    return params, weights, embedding, mtp_weights, tp_matmul


# ---------------------------------------------------------------------------------- V4


_TP_V4 = (".attn.wq_b.weight", ".attn.wo_a.weight", ".attn.wo_b.weight", ".attn.attn_sink")


def v4_share(name: str) -> str:
    """The share of a V4 tensor (DeepSeek's names)."""
    if ".ffn.experts." in name:
        return "expert"
    if name in ("embed.weight", "head.weight") or name.endswith(_TP_V4):
        return "tp"
    return "replicated"


def v4_costs(cfg: ModelConfig) -> V4Costs:
    """Costs of a V4 config: one build of Transformer(cfg) on meta (a few seconds for v4-pro)."""
    return dataclasses.replace(_v4_costs(cfg), name=cfg.name or "model")


@functools.lru_cache(maxsize=8)
def _v4_costs(cfg: ModelConfig) -> V4Costs:  # ModelConfig is frozen, hence hashable (name not compared)
    from ..checkpoint.layouts import official_storage
    from ..params import build_meta_model, count_module

    model = build_meta_model(cfg)
    report = count_module(model, cfg)
    tensors = [
        Tensor(name, tuple(t.shape), official_storage(name), v4_share(name))
        for name, t in model.state_dict(keep_vars=True).items()
    ]
    params, weights, embedding, mtp_weights, tp_matmul = _account(tensors, "mtp.")
    expert_params = report.breakdown["routed_experts"] // (cfg.n_routed_experts * cfg.n_layers)
    routed = cfg.n_activated_experts * expert_params * cfg.n_layers
    matmul_total = report.active - report.embedding_row  # = trillion.kvcost.v4_matmul_params
    return V4Costs(
        name=cfg.name or "model", family="v4", cfg=cfg, max_context=cfg.max_seq_len, dim=cfg.dim,
        vocab_size=cfg.vocab_size, hc_mult=cfg.hc_mult, n_heads=cfg.n_heads, n_layers=cfg.n_layers,
        n_mtp_layers=cfg.n_mtp_layers, n_moe_layers=cfg.n_layers, n_routed_experts=cfg.n_routed_experts,
        top_k=cfg.n_activated_experts, expert_params=expert_params, params=params, weights=weights,
        embedding=embedding, mtp_weights=mtp_weights,
        matmul={"tp": tp_matmul, "replicated": matmul_total - tp_matmul - routed, "expert": routed},
        # one draft pass: a block's own per-token parameters, then the shared head
        mtp_matmul=report.active_mtp // max(cfg.n_mtp_layers, 1) + cfg.vocab_size * cfg.dim,
    )


@dataclass(frozen=True)
class V4Costs(ModelCosts):
    """V4: window ring + compressed entries + indexer keys (trillion.kvcost)."""

    def _vec(self, precision: str) -> tuple[int, int]:
        """(KV vector, indexer key) bytes; fp32 doubles kvcost's bf16 sizes."""
        cfg = self.cfg
        if precision == "fp32":
            return 4 * cfg.head_dim, 4 * cfg.index_head_dim
        return kv_vector_bytes(cfg, precision), index_key_bytes(cfg, precision)

    def state_bytes(self, n, precision):
        if precision == "fp32":  # kvcost knows release and bf16; fp32 doubles every stored value but
            bf16 = state_breakdown(self.cfg, n, "bf16")  # the (already float32) compressor state
            return sum(2 * sum(g.values()) - g["compressor_state"] for g in bf16.values())
        return sum(sum(g.values()) for g in state_breakdown(self.cfg, n, precision).values())

    def _layers(self, mtp: bool) -> range:
        cfg = self.cfg
        return range(cfg.n_layers, cfg.n_layers + cfg.n_mtp_layers) if mtp else range(cfg.n_layers)

    def state_read_bytes(self, n, precision, mtp=False):
        cfg, (vec, key) = self.cfg, self._vec(precision)
        total = 0
        for i in self._layers(mtp):
            r = cfg.ratio(i)
            c = n // r if r else 0
            keys = min(n, cfg.window_size)  # the window ring
            if cfg.is_sparse(i):  # CSA: the top-k entries, after scoring every indexer key
                keys += min(cfg.index_topk, c)
                total += c * key
            elif r:  # HCA: every entry
                keys += c
            total += keys * vec + compressor_state_bytes(cfg, i)
        return total

    def attention_flops(self, n, mtp=False):
        flops = [v4_attention_flops(self.cfg, i, n) for i in self._layers(mtp)]
        return sum(a for a, _ in flops), sum(b for _, b in flops)

    def prefill_attention_flops(self, length):
        """Sum over positions 1..L of kvcost.v4_attention_flops, in closed form (tests check it
        against the loop)."""
        cfg = self.cfg
        per_key = 4 * cfg.n_heads * cfg.head_dim
        per_index_key = 2 * cfg.index_n_heads * cfg.index_head_dim + 2 * cfg.index_n_heads
        keys = index_keys = 0
        for i in range(cfg.n_layers):
            r = cfg.ratio(i)
            keys += sum_min(length, cfg.window_size)
            if cfg.is_sparse(i):
                keys += sum_min_floor(length, r, cfg.index_topk)
                index_keys += sum_floor(length, r)
            elif r:
                keys += sum_floor(length, r)
        return keys * per_key, index_keys * per_index_key

    def indexer_scores(self, n):
        sparse = [i for i in range(self.cfg.n_layers) if self.cfg.is_sparse(i)]
        return n // self.cfg.sparse_ratio if sparse else 0


def sum_floor(length: int, r: int) -> int:
    """sum_{n=1..L} floor(n / r)."""
    q, rem = divmod(length, r)
    return r * q * (q - 1) // 2 + q * (rem + 1)


def sum_min(length: int, w: int) -> int:
    """sum_{n=1..L} min(n, w)."""
    m = min(length, w)
    return m * (m + 1) // 2 + w * max(0, length - w)


def sum_min_floor(length: int, r: int, cap: int) -> int:
    """sum_{n=1..L} min(cap, floor(n / r)): floor(n / r) < cap exactly while n < cap * r."""
    last = min(length, cap * r - 1)
    return sum_floor(last, r) + cap * max(0, length - last)


# ---------------------------------------------------------------------------------- V3


def v3_tensors(v: V3Config) -> Iterator[Tensor]:
    """V3 / R1's weights as its checkpoint holds them (HF names): linears FP8 with 128 x 128 block
    scales, routed experts FP8 too (V3 has no FP4), embedding / head / norms BF16, the router's
    correction bias FP32. The MTP layer shares the main embedding and head (inference engines load
    them once)."""
    h, qk = v.n_heads, v.qk_nope_head_dim + v.qk_rope_head_dim
    d, vocab = v.dim, v.vocab_size
    yield Tensor("model.embed_tokens.weight", (vocab, d), "bf16", "tp")
    yield Tensor("lm_head.weight", (vocab, d), "bf16", "tp")
    yield Tensor("model.norm.weight", (d,), "bf16", "replicated")
    for i in range(v.n_layers + v.n_mtp_layers):
        p = f"model.layers.{i}."
        yield from (
            Tensor(p + "self_attn.q_a_proj.weight", (v.q_lora_rank, d), "fp8", "replicated"),
            Tensor(p + "self_attn.q_a_layernorm.weight", (v.q_lora_rank,), "bf16", "replicated"),
            Tensor(p + "self_attn.q_b_proj.weight", (h * qk, v.q_lora_rank), "fp8", "tp"),
            Tensor(p + "self_attn.kv_a_proj_with_mqa.weight", (v.kv_lora_rank + v.qk_rope_head_dim, d), "fp8",
                   "replicated"),
            Tensor(p + "self_attn.kv_a_layernorm.weight", (v.kv_lora_rank,), "bf16", "replicated"),
            Tensor(p + "self_attn.kv_b_proj.weight", (h * (v.qk_nope_head_dim + v.v_head_dim), v.kv_lora_rank),
                   "fp8", "tp"),
            Tensor(p + "self_attn.o_proj.weight", (d, h * v.v_head_dim), "fp8", "tp"),
            Tensor(p + "input_layernorm.weight", (d,), "bf16", "replicated"),
            Tensor(p + "post_attention_layernorm.weight", (d,), "bf16", "replicated"),
        )
        if i < v.n_dense_layers:
            for w, shape in (("gate", (v.inter_dim, d)), ("up", (v.inter_dim, d)), ("down", (d, v.inter_dim))):
                yield Tensor(p + f"mlp.{w}_proj.weight", shape, "fp8", "replicated")
            continue
        yield Tensor(p + "mlp.gate.weight", (v.n_routed_experts, d), "bf16", "replicated")
        yield Tensor(p + "mlp.gate.e_score_correction_bias", (v.n_routed_experts,), "fp32", "replicated")
        experts = [(f"mlp.experts.{e}.", "expert") for e in range(v.n_routed_experts)]
        for prefix, share in [*experts, ("mlp.shared_experts.", "replicated")]:
            for w, shape in (("gate", (v.moe_inter_dim, d)), ("up", (v.moe_inter_dim, d)),
                             ("down", (d, v.moe_inter_dim))):
                yield Tensor(p + prefix + f"{w}_proj.weight", shape, "fp8", share)
        if i >= v.n_layers:  # the MTP block's own input projection and norms
            yield Tensor(p + "eh_proj.weight", (d, 2 * d), "fp8", "replicated")
            for norm in ("enorm", "hnorm", "shared_head.norm"):
                yield Tensor(p + f"{norm}.weight", (d,), "bf16", "replicated")


@functools.lru_cache(maxsize=4)
def v3_costs(v: V3Config = V3, name: str = "v3") -> V3Costs:
    mtp_prefix = f"model.layers.{v.n_layers}."
    params, weights, embedding, mtp_weights, tp_matmul = _account(v3_tensors(v), mtp_prefix)
    # V3's release stores routed experts in FP8 (no FP4): "release" means FP8 everywhere.
    weights["release"], mtp_weights["release"] = dict(weights["fp8"]), dict(mtp_weights["fp8"])
    expert_params = 3 * v.dim * v.moe_inter_dim
    n_moe = v.n_layers - v.n_dense_layers
    routed = v.n_activated_experts * expert_params * n_moe
    per_layer_moe = v.attention_params() + (v.n_routed_experts + 3 * (v.n_activated_experts + v.n_shared_experts)
                                            * v.moe_inter_dim) * v.dim
    return V3Costs(
        name=name, family="v3", cfg=v, max_context=v.max_seq_len, dim=v.dim, vocab_size=v.vocab_size, hc_mult=1,
        n_heads=v.n_heads, n_layers=v.n_layers, n_mtp_layers=v.n_mtp_layers, n_moe_layers=n_moe,
        n_routed_experts=v.n_routed_experts, top_k=v.n_activated_experts, expert_params=expert_params,
        params=params, weights=weights, embedding=embedding, mtp_weights=mtp_weights,
        matmul={"tp": tp_matmul, "replicated": v.matmul_params() - tp_matmul - routed, "expert": routed},
        mtp_matmul=per_layer_moe + 2 * v.dim * v.dim + v.vocab_size * v.dim,
        notes=("V3's release is FP8 throughout (routed experts too): precision 'release' = 'fp8'",),
    )


@dataclass(frozen=True)
class V3Costs(ModelCosts):
    """V3 / R1: MLA caches a 512 + 64 latent per token per layer and attends to every token."""

    def _latent(self, precision: str) -> int:
        if precision == "fp32":
            return 4 * (self.cfg.kv_lora_rank + self.cfg.qk_rope_head_dim)
        return self.cfg.latent_bytes(precision)

    def state_bytes(self, n, precision):
        return (self.n_layers + self.n_mtp_layers) * n * self._latent(precision)

    def state_read_bytes(self, n, precision, mtp=False):
        return (self.n_mtp_layers if mtp else self.n_layers) * n * self._latent(precision)

    def attention_flops(self, n, mtp=False):
        """Absorbed MLA, as FlashMLA decodes (kvcost.v32_flops without the top-k): per key
        2 H (latent + rope) for the score and 2 H latent for the value, split by heads."""
        v = self.cfg
        per_key = 2 * v.n_heads * (v.kv_lora_rank + v.qk_rope_head_dim) + 2 * v.n_heads * v.kv_lora_rank
        return (self.n_mtp_layers if mtp else self.n_layers) * n * per_key, 0

    def prefill_attention_flops(self, length):
        """Prefill attends un-absorbed (per key 2 H (nope + rope) + 2 H v_head_dim), causal: L(L+1)/2 keys."""
        v = self.cfg
        per_key = 2 * v.n_heads * (v.qk_nope_head_dim + v.qk_rope_head_dim) + 2 * v.n_heads * v.v_head_dim
        return self.n_layers * length * (length + 1) // 2 * per_key, 0


def costs_for(model: ModelConfig | V3Config) -> ModelCosts:
    """The costs of a V4 config or of V3 (`kvcost.V3Config`)."""
    if isinstance(model, V3Config):
        return v3_costs(model)
    return v4_costs(model)


__all__ = [
    "COMPUTE_FORMAT",
    "PRECISIONS",
    "SHARES",
    "WEIGHT_FORMATS",
    "ModelCosts",
    "Tensor",
    "V3Costs",
    "V4Costs",
    "check_precision",
    "costs_for",
    "linear_bytes",
    "state_precision",
    "sum_floor",
    "sum_min",
    "sum_min_floor",
    "v3_costs",
    "v3_tensors",
    "v4_costs",
    "v4_share",
]
