"""Long-context cost of one sequence: attention-state bytes and decode FLOPs, V4 against V3.2.

Pure arithmetic on the config (no torch): `kv_cost(cfg, n_tokens)` answers "what does one sequence
hold after N tokens of context, and what does decoding its next token cost", for a V4 config and,
at the same N, for DeepSeek-V3.2 (671B, MLA + DSA) as published. docs/kv.md has the formulas as text
and the table for the released flavors. The only input not read from the config is V4's count of
activated parameters, which comes from `trillion.params.count_params` (it builds the model on meta,
so it needs torch; pass `matmul_params=` to stay torch-free).

What one V4 sequence holds per layer (the layout of `trillion.engine.state` and of DeepSeek's
`inference/model.py`):

* window ring: the last min(N, window_size) KV vectors (head_dim each; one vector is K and V);
* compressed entries (CSA and HCA layers): floor(N / ratio) KV vectors;
* indexer keys (CSA layers): floor(N / ratio) keys of index_head_dim;
* compressor state (CSA and HCA layers): the partial-block buffers `kv_state` and `score_state`,
  float32, [c*ratio, c*head_dim] each with c = 2 on overlapping (CSA) compressors and 1 otherwise,
  plus the same for the indexer's own compressor on CSA layers (index_head_dim wide). Counted at
  their allocated size, which does not depend on N.

Two storage precisions:

* "release", V4's design (V4 report; DeepSeek's inference code fake-quantises at the same points):
  a KV vector's head_dim - rope_head_dim non-rope dims in FP8 E4M3 with one UE8M0 scale byte per 64,
  its rope dims in BF16; indexer keys in FP4 E2M1 (half a byte) with one UE8M0 byte per 32 values;
* "bf16": every stored value 2 bytes.
The compressor state is float32 in both.

Conventions: `bytes` counts the main layers (what V3.2's 61 layers are compared with); the MTP
blocks' state is reported apart (`mtp_bytes`). FLOPs are those of decoding one token with the main
model (MTP excluded), multiply-add = 2 FLOPs.

Legend: N context tokens, W window, r ratio, C = floor(N / r) compressed entries, H heads,
K head_dim, Hi / d index heads / index head dim.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .config import ModelConfig, ceil_div
from .errors import UserError
from .units import format_bytes

PRECISIONS = ("release", "bf16")
KINDS = ("window", "csa", "hca")
GROUPS = KINDS + ("mtp",)  # breakdown rows: main layers by kind, then the MTP blocks together
PARTS = ("window_ring", "entries", "index_keys", "compressor_state")
PART_LABELS = {
    "window_ring": "window ring",
    "entries": "compressed entries",
    "index_keys": "indexer keys",
    "compressor_state": "compressor state (fp32)",
}

FP8_KV_GROUP = 64  # non-rope KV dims per UE8M0 scale byte (V4 report; DeepSeek's act_quant block 64)
FP4_INDEX_GROUP = 32  # indexer-key values per UE8M0 scale byte (FP4 blocks of 32)
COMPRESSOR_STATE_BYTES = 4  # kv_state / score_state are float32 in DeepSeek's Compressor
COMPRESSOR_BUFFERS = 2  # kv_state and score_state


# ---------------------------------------------------------------------------------- DeepSeek-V3.2


@dataclass(frozen=True)
class V3Config:
    """DeepSeek-V3 / R1 (671B, MLA over every token, no indexer): the numbers the cost formulas use.

    Architecture: deepseek-ai/DeepSeek-V3 (and -R1) `config.json`, key named beside each field. The
    baseline of the deployment planner's published-figure checks (DeepSeek's own V3/R1 service on
    H800, Huawei's CloudMatrix384 on 910C: docs/plan.md).
    """

    n_layers: int = 61  # num_hidden_layers (the MTP layer, num_nextn_predict_layers = 1, apart)
    dim: int = 7168  # hidden_size
    vocab_size: int = 129280  # vocab_size
    n_heads: int = 128  # num_attention_heads
    q_lora_rank: int = 1536  # q_lora_rank
    kv_lora_rank: int = 512  # kv_lora_rank: the latent cached per token per layer
    qk_nope_head_dim: int = 128  # qk_nope_head_dim
    qk_rope_head_dim: int = 64  # qk_rope_head_dim: cached next to the latent
    v_head_dim: int = 128  # v_head_dim
    n_dense_layers: int = 3  # first_k_dense_replace
    inter_dim: int = 18432  # intermediate_size (dense layers)
    n_routed_experts: int = 256  # n_routed_experts
    n_activated_experts: int = 8  # num_experts_per_tok
    n_shared_experts: int = 1  # n_shared_experts
    moe_inter_dim: int = 2048  # moe_intermediate_size
    n_mtp_layers: int = 1  # num_nextn_predict_layers
    max_seq_len: int = 163840  # max_position_embeddings
    # DeepSeek serves V3/R1's MLA in BF16 ("core MLA computations ... use the BF16 format", the
    # day-6 inference-system overview): 512 latent + 64 rope dims, 2 bytes each, per token per layer.
    release_latent_bytes: int = (512 + 64) * 2

    def latent_bytes(self, precision: str) -> int:
        """Bytes of one token's MLA cache entry in one layer."""
        _check_precision(precision)
        if precision == "release":
            return self.release_latent_bytes
        return 2 * (self.kv_lora_rank + self.qk_rope_head_dim)

    def attention_params(self) -> int:
        """MLA: q_a, q_b, kv_a (latent + the rope key), kv_b, o."""
        h, qk = self.n_heads, self.qk_nope_head_dim + self.qk_rope_head_dim
        return (
            self.dim * self.q_lora_rank
            + self.q_lora_rank * h * qk
            + self.dim * (self.kv_lora_rank + self.qk_rope_head_dim)
            + self.kv_lora_rank * h * (self.qk_nope_head_dim + self.v_head_dim)
            + h * self.v_head_dim * self.dim
        )

    def matmul_params(self) -> int:
        """Weights one decoded token multiplies with: attention in every layer; a dense SwiGLU
        (3 x dim x inter_dim) in the first layers; in the others the router (experts x dim) and
        top-k routed + shared SwiGLU experts (3 x dim x moe_inter_dim each); the head (vocab x dim).
        The embedding is a lookup and the norms are not matmuls. Absorbing kv_b into q and the output
        (MLA decode) costs the same FLOPs as applying it, so 2 x these is the weight FLOPs.
        V3: 36.62B; V3.2 (with its indexer): 37.48B; DeepSeek quotes "37B activated" for both."""
        moe_layers = self.n_layers - self.n_dense_layers
        experts = self.n_activated_experts + self.n_shared_experts
        return (
            self.n_layers * self.attention_params()
            + self.n_dense_layers * 3 * self.dim * self.inter_dim
            + moe_layers * (self.n_routed_experts * self.dim + experts * 3 * self.dim * self.moe_inter_dim)
            + self.vocab_size * self.dim
        )


@dataclass(frozen=True)
class V32Config(V3Config):
    """DeepSeek-V3.2 (671B), the baseline of `kv_cost`: V3 plus the DSA lightning indexer.

    Architecture: deepseek-ai/DeepSeek-V3.2(-Exp) `config.json` (also `inference/config_671B_v3.2.json`).
    Cache layout at release precision: deepseek-ai/FlashMLA README, "FP8 KV cache" of the sparse
    (DSA) decoding kernels, and the DeepGEMM indexer's FP8 keys.
    """

    index_n_heads: int = 64  # index_n_heads (DSA lightning indexer)
    index_head_dim: int = 128  # index_head_dim: one indexer key per token per layer
    index_topk: int = 2048  # index_topk: tokens each query attends to
    # FlashMLA's FP8 sparse cache, per token per layer: 512 FP8 latent bytes + 4 float32 scales (one
    # per 128 latent dims, 16 bytes) + 64 BF16 rope dims (128 bytes) = 656 bytes.
    release_latent_bytes: int = 512 + 4 * 4 + 64 * 2
    # Indexer keys in FP8 with one float32 scale per token (DeepGEMM's paged indexer-logit kernels).
    release_index_key_bytes: int = 128 + 4

    def index_key_bytes(self, precision: str) -> int:
        _check_precision(precision)
        return self.release_index_key_bytes if precision == "release" else 2 * self.index_head_dim

    def attention_params(self) -> int:
        """MLA (as V3) + DSA indexer (wq_b, wk, weights_proj)."""
        indexer = (
            self.q_lora_rank * self.index_n_heads * self.index_head_dim
            + self.dim * self.index_head_dim
            + self.dim * self.index_n_heads
        )
        return super().attention_params() + indexer


V3 = V3Config()
V32 = V32Config()


# ---------------------------------------------------------------------------------- V4 state bytes


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise UserError(f"precision = {precision!r}; expected one of {PRECISIONS}")


def kv_vector_bytes(cfg: ModelConfig, precision: str) -> int:
    """One stored KV vector (window ring slot or compressed entry)."""
    _check_precision(precision)
    if precision == "bf16":
        return 2 * cfg.head_dim
    nope = cfg.head_dim - cfg.rope_head_dim
    return nope + ceil_div(nope, FP8_KV_GROUP) + 2 * cfg.rope_head_dim  # e4m3 + ue8m0 scales + bf16 rope


def index_key_bytes(cfg: ModelConfig, precision: str) -> int:
    """One stored indexer key (CSA layers)."""
    _check_precision(precision)
    d = cfg.index_head_dim
    if precision == "bf16":
        return 2 * d
    return ceil_div(d, 2) + ceil_div(d, FP4_INDEX_GROUP)  # two e2m1 codes per byte + ue8m0 scales


def compressor_state_bytes(cfg: ModelConfig, layer: int) -> int:
    """float32 kv_state + score_state of a layer's compressor(s): [c*r, c*width] each."""
    r = cfg.ratio(layer)
    if r == 0:
        return 0
    c = 2 if cfg.is_sparse(layer) else 1  # overlapping compressor: this block and the previous one
    n = COMPRESSOR_BUFFERS * (c * r) * (c * cfg.head_dim)
    if cfg.is_sparse(layer):  # the indexer's own compressor, overlapping as well
        n += COMPRESSOR_BUFFERS * (2 * r) * (2 * cfg.index_head_dim)
    return n * COMPRESSOR_STATE_BYTES


def layer_state_bytes(cfg: ModelConfig, layer: int, n_tokens: int, precision: str) -> dict[str, int]:
    """Bytes one sequence holds in main layer (or MTP block) `layer` after n_tokens tokens, by PARTS."""
    if n_tokens < 0:
        raise UserError(f"n_tokens = {n_tokens}; a context length is >= 0")
    r = cfg.ratio(layer)
    c = n_tokens // r if r else 0  # entries; a partial block lives in the compressor state
    vec = kv_vector_bytes(cfg, precision)
    return {
        "window_ring": min(n_tokens, cfg.window_size) * vec,
        "entries": c * vec,
        "index_keys": c * index_key_bytes(cfg, precision) if cfg.is_sparse(layer) else 0,
        "compressor_state": compressor_state_bytes(cfg, layer),
    }


def state_breakdown(cfg: ModelConfig, n_tokens: int, precision: str) -> dict[str, dict[str, int]]:
    """GROUPS -> PARTS -> bytes, summed over the layers of each group (MTP blocks: "mtp")."""
    out = {g: dict.fromkeys(PARTS, 0) for g in GROUPS}
    for i in range(cfg.n_layers + cfg.n_mtp_layers):
        group = cfg.layer_kind(i) if i < cfg.n_layers else "mtp"
        for part, n in layer_state_bytes(cfg, i, n_tokens, precision).items():
            out[group][part] += n
    return out


# ---------------------------------------------------------------------------------- decode FLOPs


def v4_attention_flops(cfg: ModelConfig, layer: int, n_tokens: int) -> tuple[int, int]:
    """(attention, indexer) FLOPs of one decoded token in one layer at n_tokens of context.

    Attention: every key seen costs H*K multiply-adds for the score and H*K for the value (shared
    K = V, so both are head_dim wide). Keys seen: the window, plus every entry (HCA) or the top-k
    entries the indexer picks (CSA). Indexer: Hi*d multiply-adds per compressed key, then its
    weighted sum over heads (w_h * relu(score_h)): Hi more.
    """
    r = cfg.ratio(layer)
    c = n_tokens // r if r else 0
    keys = min(n_tokens, cfg.window_size)
    indexer = 0
    if cfg.is_sparse(layer):
        keys += min(cfg.index_topk, c)
        indexer = (2 * cfg.index_n_heads * cfg.index_head_dim + 2 * cfg.index_n_heads) * c
    elif r:
        keys += c
    return keys * (2 * cfg.n_heads * cfg.head_dim + 2 * cfg.n_heads * cfg.head_dim), indexer


def v4_flops(cfg: ModelConfig, n_tokens: int, matmul_params: int) -> dict[str, int]:
    """Decode FLOPs of the main model by source (MTP excluded)."""
    out = {"weights": 2 * matmul_params, "attention_window": 0, "attention_csa": 0, "attention_hca": 0,
           "indexer": 0}
    for i in range(cfg.n_layers):
        attn, idx = v4_attention_flops(cfg, i, n_tokens)
        out[f"attention_{cfg.layer_kind(i)}"] += attn
        out["indexer"] += idx
    return out


def v32_flops(n_tokens: int, v: V32Config = V32) -> dict[str, int]:
    """Decode FLOPs of V3.2 (absorbed MLA, as FlashMLA decodes) by source.

    Attention: each of the min(N, index_topk) selected tokens costs H x (latent + rope) multiply-adds
    for the score (q absorbed into the 512-dim latent, plus the 64 rope dims) and H x latent for the
    value (read in the latent, projected by the absorbed kv_b afterwards, counted in the weights).
    Indexer: every one of the N tokens, Hi x d multiply-adds + Hi for the weighted head sum.
    """
    per_key = 2 * v.n_heads * (v.kv_lora_rank + v.qk_rope_head_dim) + 2 * v.n_heads * v.kv_lora_rank
    per_index_key = 2 * v.index_n_heads * v.index_head_dim + 2 * v.index_n_heads
    return {
        "weights": 2 * v.matmul_params(),
        "attention": v.n_layers * min(n_tokens, v.index_topk) * per_key,
        "indexer": v.n_layers * n_tokens * per_index_key,
    }


def v4_matmul_params(cfg: ModelConfig) -> int:
    """Activated parameters per token minus the embedding row (a lookup, not a matmul).

    From `trillion.params.count_params` (needs torch: the model is built on meta). It includes the
    norms, sinks and mHC scalars too, which are not all matmul weights: < 0.1% of the total.
    """
    from .params import count_params

    r = count_params(cfg)
    return r.active - r.embedding_row


# ---------------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class KvCost:
    """Attention-state bytes of one sequence and FLOPs of decoding its next token, V4 vs V3.2.

    release / bf16: GROUPS ("window", "csa", "hca" main layers, "mtp" blocks) -> PARTS -> bytes.
    bytes / bytes_bf16: main layers; mtp_bytes*: the MTP blocks. flops / v32_flops: main model.
    """

    name: str
    n_tokens: int
    layers: dict[str, int]  # main layers per kind; "mtp": MTP blocks
    release: dict[str, dict[str, int]]
    bf16: dict[str, dict[str, int]]
    bytes: int
    bytes_bf16: int
    mtp_bytes: int
    mtp_bytes_bf16: int
    v32_bytes: int
    v32_bytes_bf16: int
    v32_breakdown: dict[str, dict[str, int]]  # precision -> "latent" / "index_keys" -> bytes
    flops: float
    v32_flops: float
    flops_breakdown: dict[str, int] = field(default_factory=dict)
    v32_flops_breakdown: dict[str, int] = field(default_factory=dict)
    matmul_params: int = 0
    v32_matmul_params: int = 0

    @property
    def bytes_ratio(self) -> float:
        return self.bytes / self.v32_bytes if self.v32_bytes else float("nan")

    @property
    def bytes_ratio_bf16(self) -> float:
        return self.bytes_bf16 / self.v32_bytes_bf16 if self.v32_bytes_bf16 else float("nan")

    @property
    def flops_ratio(self) -> float:
        return self.flops / self.v32_flops

    def scaled(self, batch: int) -> KvCost:
        """The same for `batch` sequences of n_tokens each (bytes and FLOPs times batch)."""
        if batch < 1:
            raise UserError(f"batch = {batch}; need at least one sequence")

        def mul(d: dict) -> dict:
            return {k: (mul(v) if isinstance(v, dict) else v * batch) for k, v in d.items()}

        return KvCost(
            name=self.name, n_tokens=self.n_tokens, layers=self.layers,
            release=mul(self.release), bf16=mul(self.bf16),
            bytes=self.bytes * batch, bytes_bf16=self.bytes_bf16 * batch,
            mtp_bytes=self.mtp_bytes * batch, mtp_bytes_bf16=self.mtp_bytes_bf16 * batch,
            v32_bytes=self.v32_bytes * batch, v32_bytes_bf16=self.v32_bytes_bf16 * batch,
            v32_breakdown=mul(self.v32_breakdown),
            flops=self.flops * batch, v32_flops=self.v32_flops * batch,
            flops_breakdown=mul(self.flops_breakdown), v32_flops_breakdown=mul(self.v32_flops_breakdown),
            matmul_params=self.matmul_params, v32_matmul_params=self.v32_matmul_params,
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(bytes_ratio=self.bytes_ratio, bytes_ratio_bf16=self.bytes_ratio_bf16,
                 flops_ratio=self.flops_ratio, conventions=CONVENTIONS)
        return d


CONVENTIONS = {
    "release": "V4: non-rope KV dims FP8 E4M3 + 1 UE8M0 byte per 64, rope dims BF16; indexer keys FP4 E2M1 + "
    "1 UE8M0 byte per 32; compressor state float32. V3.2: FlashMLA FP8 sparse cache, 656 B latent + 132 B "
    "indexer key per token per layer",
    "bf16": "every stored value 2 bytes (V4 compressor state still float32)",
    "bytes": "one sequence, main layers only (MTP blocks in mtp_bytes); V3.2: its 61 layers",
    "window": "min(N, window_size) vectors per layer; entries and indexer keys floor(N / ratio)",
    "compressor_state": "float32 kv_state + score_state at their allocated size, the indexer's compressor "
    "included",
    "flops": "decode one token at context N, main model, MTP excluded: 2 x matmul params (no embedding) + "
    "attention (4 x heads x head_dim per key seen) + indexer (2 x Hi x d + 2 x Hi per key scored)",
}


def kv_cost(
    cfg: ModelConfig, n_tokens: int, *, matmul_params: int | None = None, v32: V32Config = V32
) -> KvCost:
    """Attention-state bytes of one sequence at n_tokens of context and the FLOPs of its next token.

    matmul_params: V4's per-token matmul parameters; None = `v4_matmul_params(cfg)` (needs torch).
    """
    if n_tokens < 0:
        raise UserError(f"n_tokens = {n_tokens}; a context length is >= 0")
    if matmul_params is None:
        matmul_params = v4_matmul_params(cfg)
    release = state_breakdown(cfg, n_tokens, "release")
    bf16 = state_breakdown(cfg, n_tokens, "bf16")
    main = lambda b: sum(sum(b[g].values()) for g in KINDS)
    v32_parts = {
        p: {
            "latent": v32.n_layers * n_tokens * v32.latent_bytes(p),
            "index_keys": v32.n_layers * n_tokens * v32.index_key_bytes(p),
        }
        for p in PRECISIONS
    }
    fl, fl32 = v4_flops(cfg, n_tokens, matmul_params), v32_flops(n_tokens, v32)
    kinds = [cfg.layer_kind(i) for i in range(cfg.n_layers)]
    return KvCost(
        name=cfg.name,
        n_tokens=n_tokens,
        layers={**{k: kinds.count(k) for k in KINDS}, "mtp": cfg.n_mtp_layers},
        release=release,
        bf16=bf16,
        bytes=main(release),
        bytes_bf16=main(bf16),
        mtp_bytes=sum(release["mtp"].values()),
        mtp_bytes_bf16=sum(bf16["mtp"].values()),
        v32_bytes=sum(v32_parts["release"].values()),
        v32_bytes_bf16=sum(v32_parts["bf16"].values()),
        v32_breakdown=v32_parts,
        flops=float(sum(fl.values())),
        v32_flops=float(sum(fl32.values())),
        flops_breakdown=fl,
        v32_flops_breakdown=fl32,
        matmul_params=matmul_params,
        v32_matmul_params=v32.matmul_params(),
    )


# ---------------------------------------------------------------------------------- formatting


def parse_tokens(text: str) -> int:
    """'1048576', '128K', '1M' -> tokens (K = 1024, M = 1024**2, as context lengths are quoted)."""
    s = text.strip().upper().replace("_", "").replace(",", "")
    mult = {"K": 1024, "M": 1024**2}.get(s[-1:], 1)
    try:
        n = int(s[:-1] if mult > 1 else s) * mult
    except ValueError:
        raise UserError(f"context {text!r}: expected a token count like 4096, 128K or 1M") from None
    if n < 0:
        raise UserError(f"context {text!r}: a context length is >= 0")
    return n


def format_tokens(n: int) -> str:
    for unit, scale in (("M", 1024**2), ("K", 1024)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return f"{n:,}"




def format_flops(n: float, digits: int = 1) -> str:
    """GFLOP above 1e9 (no TFLOP: the ratios read easier in one unit)."""
    for unit, scale in (("GFLOP", 1e9), ("MFLOP", 1e6), ("KFLOP", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:,.{digits}f} {unit}"
    return f"{n:.0f} FLOP"


def markdown_table(costs: list[KvCost]) -> str:
    """One markdown row per (flavor, context) for docs/kv.md."""
    rows = [
        ("| flavor | context | V4 state (release) | V3.2 (release) | ratio | V4 state (bf16) | V3.2 (bf16) "
        "| ratio | V4 GFLOP/token | V3.2 GFLOP/token | ratio |"),
        "|" + "---|" * 11,
    ]
    for c in costs:
        cells = [
            f"`{c.name}`", format_tokens(c.n_tokens),
            format_bytes(c.bytes), format_bytes(c.v32_bytes), f"{c.bytes_ratio:.1%}",
            format_bytes(c.bytes_bf16), format_bytes(c.v32_bytes_bf16), f"{c.bytes_ratio_bf16:.1%}",
            f"{c.flops / 1e9:,.1f}", f"{c.v32_flops / 1e9:,.1f}", f"{c.flops_ratio:.1%}",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


__all__ = [
    "CONVENTIONS",
    "GROUPS",
    "KINDS",
    "PARTS",
    "PART_LABELS",
    "PRECISIONS",
    "V3",
    "V32",
    "KvCost",
    "V3Config",
    "V32Config",
    "compressor_state_bytes",
    "format_bytes",
    "format_flops",
    "format_tokens",
    "index_key_bytes",
    "kv_cost",
    "kv_vector_bytes",
    "layer_state_bytes",
    "markdown_table",
    "parse_tokens",
    "state_breakdown",
    "v4_attention_flops",
    "v4_flops",
    "v4_matmul_params",
    "v32_flops",
]
