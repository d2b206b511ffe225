"""What llama.cpp's `deepseek4` architecture reads: tensor names, metadata keys, accepted configs.

Read from llama.cpp's loader (src/models/deepseek4.cpp `load_arch_hparams` / `load_arch_tensors`,
the generic hparams in src/llama-model.cpp, names in src/llama-arch.cpp) as vendored by
llama-cpp-python 0.3.36. Everything here is plain data about that file format; `export.py` writes
it and the tests read it back.

Tensor names: one rule per tensor of ours (DeepSeek's names, `{i}` a main layer), read in one
direction: ours -> GGUF. Routed experts are stacked along a leading expert axis into one GGUF tensor
per projection. The MTP block is not exported (llama.cpp's own converter puts it in a separate
file). Shapes stay as PyTorch stores them: a torch [out, in] weight is a GGUF tensor whose ggml
shape is {in, out}, which is what the loader asks for.

Storage kinds: "matrix" tensors take the export type (f32 / f16 / q8_0): the weights trillion's
quantisation schemes quantise (attention projections, indexer wq_b, shared and routed experts) plus
the embedding and the head. "float" tensors stay float32 whatever the type (norms, mHC mixing,
sinks, router, selection bias, compressors and the indexer's weights_proj, which DeepSeek keeps in
float32 or bf16). "index" is the hash-routing table, int32.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ModelConfig
from ..errors import UserError

ARCH = "deepseek4"
MATRIX, FLOAT, INDEX = "matrix", "float", "index"

# Our state_dict name -> (GGUF name, storage kind). Order is the order tensors are written in.
GLOBAL_TENSORS = (
    ("embed.weight", "token_embd.weight", MATRIX),
    ("hc_head_fn", "output_hc_fn.weight", FLOAT),
    ("hc_head_base", "output_hc_base.weight", FLOAT),
    ("hc_head_scale", "output_hc_scale.weight", FLOAT),
    ("norm.weight", "output_norm.weight", FLOAT),
    ("head.weight", "output.weight", MATRIX),
)
LAYER_TENSORS = (
    ("hc_attn_fn", "hc_attn_fn.weight", FLOAT),
    ("hc_attn_base", "hc_attn_base.weight", FLOAT),
    ("hc_attn_scale", "hc_attn_scale.weight", FLOAT),
    ("hc_ffn_fn", "hc_ffn_fn.weight", FLOAT),
    ("hc_ffn_base", "hc_ffn_base.weight", FLOAT),
    ("hc_ffn_scale", "hc_ffn_scale.weight", FLOAT),
    ("attn_norm.weight", "attn_norm.weight", FLOAT),
    ("attn.attn_sink", "attn_sinks.weight", FLOAT),
    ("attn.wq_a.weight", "attn_q_a.weight", MATRIX),
    ("attn.q_norm.weight", "attn_q_a_norm.weight", FLOAT),
    ("attn.wq_b.weight", "attn_q_b.weight", MATRIX),
    ("attn.wkv.weight", "attn_kv.weight", MATRIX),
    ("attn.kv_norm.weight", "attn_kv_a_norm.weight", FLOAT),
    # wo_a stays [o_groups * o_lora_rank, n_heads * head_dim / o_groups]: the loader views it as
    # {group input, o_lora_rank, o_groups} itself.
    ("attn.wo_a.weight", "attn_output_a.weight", MATRIX),
    ("attn.wo_b.weight", "attn_output_b.weight", MATRIX),
    ("attn.compressor.ape", "attn_compressor_ape.weight", FLOAT),
    ("attn.compressor.wkv.weight", "attn_compressor_kv.weight", FLOAT),
    ("attn.compressor.wgate.weight", "attn_compressor_gate.weight", FLOAT),
    ("attn.compressor.norm.weight", "attn_compressor_norm.weight", FLOAT),
    ("attn.indexer.wq_b.weight", "indexer.attn_q_b.weight", MATRIX),
    ("attn.indexer.weights_proj.weight", "indexer.proj.weight", FLOAT),
    ("attn.indexer.compressor.ape", "indexer_compressor_ape.weight", FLOAT),
    ("attn.indexer.compressor.wkv.weight", "indexer_compressor_kv.weight", FLOAT),
    ("attn.indexer.compressor.wgate.weight", "indexer_compressor_gate.weight", FLOAT),
    ("attn.indexer.compressor.norm.weight", "indexer_compressor_norm.weight", FLOAT),
    ("ffn_norm.weight", "ffn_norm.weight", FLOAT),
    ("ffn.gate.weight", "ffn_gate_inp.weight", FLOAT),
    ("ffn.gate.bias", "exp_probs_b.bias", FLOAT),
    ("ffn.gate.tid2eid", "ffn_gate_tid2eid.weight", INDEX),
    ("ffn.shared_experts.w1.weight", "ffn_gate_shexp.weight", MATRIX),
    ("ffn.shared_experts.w2.weight", "ffn_down_shexp.weight", MATRIX),
    ("ffn.shared_experts.w3.weight", "ffn_up_shexp.weight", MATRIX),
)
# Routed experts e = 0..E-1 of one projection -> one stacked tensor [E, out, in].
EXPERT_TENSORS = (
    ("ffn.experts.{e}.w1.weight", "ffn_gate_exps.weight"),
    ("ffn.experts.{e}.w2.weight", "ffn_down_exps.weight"),
    ("ffn.experts.{e}.w3.weight", "ffn_up_exps.weight"),
)


@dataclass(frozen=True)
class TensorPlan:
    """One GGUF tensor: its name, the state_dict names it is made of (several for stacked experts)
    and its storage kind."""

    gguf_name: str
    sources: tuple[str, ...]
    kind: str


def tensor_plan(cfg: ModelConfig, state_names: set[str]) -> list[TensorPlan]:
    """Every GGUF tensor of the main model, in write order; raises if a tensor the loader needs is
    missing from `state_names` or a main-model tensor has no rule (MTP tensors are left out)."""
    plan = [TensorPlan(g, (ours,), kind) for ours, g, kind in GLOBAL_TENSORS]
    for i in range(cfg.n_layers):
        for ours, g, kind in LAYER_TENSORS:
            name = f"layers.{i}.{ours}"
            if name in state_names:
                plan.append(TensorPlan(f"blk.{i}.{g}", (name,), kind))
        for ours, g in EXPERT_TENSORS:
            names = tuple(f"layers.{i}.{ours.format(e=e)}" for e in range(cfg.n_routed_experts))
            plan.append(TensorPlan(f"blk.{i}.{g}", names, MATRIX))
    used = {s for p in plan for s in p.sources}
    missing = sorted(used - state_names)
    if missing:
        raise UserError(f"the model lacks tensors llama.cpp needs: {', '.join(missing[:8])}")
    unmapped = sorted(n for n in state_names - used if not n.startswith("mtp."))
    if unmapped:
        raise UserError(f"no GGUF name for model tensors: {', '.join(unmapped[:8])}")
    return plan


# ---------------------------------------------------------------------- accepted configurations

CSA_RATIO, HCA_RATIO = 4, 128  # llama.cpp's DSV4_CSA_RATIO / DSV4_HCA_RATIO
HC_MULT = 4  # build_hc_pre asserts hc == 4
ROTATION_BLOCK = 64  # the lightning indexer's keys get a Hadamard rotation of >= 64 dims
YARN_BETAS = (32, 1)  # the deepseek4 loader reads no YaRN beta keys: ggml's defaults apply
SQRT_SOFTPLUS = 4  # LLAMA_EXPERT_GATING_FUNC_TYPE_SQRT_SOFTPLUS


def llamacpp_problems(cfg: ModelConfig) -> list[str]:
    """Why llama.cpp's deepseek4 loader or graph would refuse or misread `cfg` (empty: accepted).

    Each entry names the config field, its value and what llama.cpp expects."""
    out = []
    ratios = cfg.compress_ratios[: cfg.n_layers]
    bad = sorted({r for r in ratios if r not in (0, CSA_RATIO, HCA_RATIO)})
    if bad:
        out.append(
            f"compress_ratios has {bad}: llama.cpp implements 0 (window), {CSA_RATIO} (CSA) and "
            f"{HCA_RATIO} (HCA) only"
        )
    if CSA_RATIO in ratios and cfg.sparse_ratio != CSA_RATIO:
        out.append(
            f"sparse_ratio = {cfg.sparse_ratio}: llama.cpp treats every ratio-{CSA_RATIO} layer as CSA "
            f"(overlapping compressor + indexer)"
        )
    if cfg.hc_mult != HC_MULT:
        out.append(f"hc_mult = {cfg.hc_mult}: llama.cpp's mHC is written for {HC_MULT} streams")
    if cfg.score_func != "sqrtsoftplus":
        out.append(f"score_func = {cfg.score_func!r}: llama.cpp's deepseek4 loader expects 'sqrtsoftplus'")
    if CSA_RATIO in ratios and cfg.index_head_dim % ROTATION_BLOCK:
        out.append(
            f"index_head_dim = {cfg.index_head_dim}: llama.cpp rotates indexer keys with a Hadamard "
            f"matrix of >= {ROTATION_BLOCK} dims, so it must be a multiple of {ROTATION_BLOCK}"
        )
    if CSA_RATIO in ratios and cfg.index_head_dim < cfg.rope_head_dim:
        out.append(
            f"index_head_dim = {cfg.index_head_dim} < rope_head_dim = {cfg.rope_head_dim}: llama.cpp "
            f"ropes the indexer's last rope_head_dim channels"
        )
    if cfg.n_heads % cfg.o_groups:
        out.append(f"n_heads = {cfg.n_heads} is not a multiple of o_groups = {cfg.o_groups}")
    if cfg.n_shared_experts != 1:
        out.append(
            f"n_shared_experts = {cfg.n_shared_experts}: llama.cpp's deepseek4 needs one shared expert"
        )
    if cfg.original_seq_len > 0 and (cfg.beta_fast, cfg.beta_slow) != YARN_BETAS:
        out.append(
            f"beta_fast, beta_slow = {cfg.beta_fast}, {cfg.beta_slow}: llama.cpp's deepseek4 loader "
            f"always uses YaRN betas {YARN_BETAS[0]}, {YARN_BETAS[1]}"
        )
    return out


def check_llamacpp_support(cfg: ModelConfig) -> None:
    """Raise ValueError naming every reason llama.cpp cannot run `cfg` (one line each)."""
    problems = llamacpp_problems(cfg)
    if problems:
        what = f"{cfg.name}: " if cfg.name else ""
        raise UserError(f"{what}llama.cpp's deepseek4 cannot run this model: " + "; ".join(problems))


# ---------------------------------------------------------------------- metadata


def hparams(cfg: ModelConfig) -> dict[str, object]:
    """The `deepseek4.*` metadata keys llama.cpp reads, from our config (values as Python types;
    bool, int (uint32), float (float32), lists (arrays) and str)."""
    n = cfg.n_layers
    kv: dict[str, object] = {
        "vocab_size": cfg.vocab_size,
        "context_length": cfg.max_seq_len,
        "embedding_length": cfg.dim,
        "embedding_length_out": cfg.hc_mult * cfg.dim,
        "block_count": n,
        "attention.head_count": cfg.n_heads,
        "attention.head_count_kv": 1,
        "attention.key_length": cfg.head_dim,
        "attention.value_length": cfg.head_dim,
        "attention.layer_norm_rms_epsilon": float(cfg.norm_eps),
        "attention.q_lora_rank": cfg.q_lora_rank,
        "attention.sliding_window": cfg.window_size,
        "attention.output_group_count": cfg.o_groups,
        "attention.output_lora_rank": cfg.o_lora_rank,
        "attention.compress_ratios": [int(r) for r in cfg.compress_ratios[:n]],
        "attention.compress_rope_freq_base": float(cfg.compress_rope_theta),
        "attention.indexer.head_count": cfg.index_n_heads,
        "attention.indexer.key_length": cfg.index_head_dim,
        "attention.indexer.top_k": cfg.index_topk,
        "rope.dimension_count": cfg.rope_head_dim,
        "rope.freq_base": float(cfg.rope_theta),
        "expert_count": cfg.n_routed_experts,
        "expert_used_count": cfg.n_activated_experts,
        "expert_shared_count": cfg.n_shared_experts,
        "expert_feed_forward_length": cfg.moe_inter_dim,
        "expert_weights_scale": float(cfg.route_scale),
        "expert_weights_norm": bool(cfg.normalize_route_weights),
        "expert_gating_func": SQRT_SOFTPLUS,
        "swiglu_clamp_exp": [float(cfg.swiglu_limit)] * n,
        "swiglu_clamp_shexp": [float(cfg.swiglu_limit)] * n,
        "hyper_connection.count": cfg.hc_mult,
        "hyper_connection.sinkhorn_iterations": cfg.hc_sinkhorn_iters,
        "hyper_connection.epsilon": float(cfg.hc_eps),
        "hash_layer_count": cfg.n_hash_layers,
    }
    if cfg.original_seq_len > 0:
        # YaRN on the compressed layers (llama.cpp: only where compress_ratios != 0, at
        # compress_rope_freq_base), frequencies only: it cancels ggml's YaRN magnitude scale as V4 does.
        kv.update(
            {
                "rope.scaling.type": "yarn",
                "rope.scaling.factor": float(cfg.rope_factor),
                "rope.scaling.original_context_length": cfg.original_seq_len,
                "rope.scaling.yarn_beta_fast": float(cfg.beta_fast),
                "rope.scaling.yarn_beta_slow": float(cfg.beta_slow),
            }
        )
    return {f"{ARCH}.{k}": v for k, v in kv.items()}
