"""The DeepSeek-V4 model configuration: one dataclass, plain data, no torch.

Field names follow DeepSeek's own inference code (``inference/config.json``), because our module
and tensor names do too. Two translations live here as well:

* ``to_hf_dict`` / ``from_hf_dict``: the ``config.json`` of a Hugging Face checkpoint, both the
  official release (legacy keys ``compress_ratios``, ``rope_scaling``, ``num_hash_layers``) and what
  transformers' ``DeepseekV4Config.save_pretrained`` writes (``layer_types``, ``compress_rates``,
  ``rope_parameters``).
* ``from_deepseek_dict``: DeepSeek's ``inference/config.json``.

Every behaviour difference is a field (see ``sparse_ratio`` and ``route_norm``), never a check on a
flavor name or a size.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError

SCORE_FUNCS = ("sqrtsoftplus", "sigmoid", "softmax")

# transformers names the three attention schedules; DeepSeek uses the ratio alone.
HF_WINDOW, HF_CSA, HF_HCA = "sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention"


class ConfigError(UserError):
    """A configuration that cannot describe a V4 model; the message names the field."""


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of one DeepSeek-V4 model (main stack + MTP block)."""

    vocab_size: int = 129280
    dim: int = 4096
    n_layers: int = 43
    n_heads: int = 64
    head_dim: int = 512
    rope_head_dim: int = 64
    q_lora_rank: int = 1024
    o_groups: int = 8
    o_lora_rank: int = 1024
    norm_eps: float = 1e-6

    # Attention schedule. One ratio per layer, then one per MTP block: 0 = sliding window only,
    # `sparse_ratio` = CSA (overlapping compressor + lightning indexer), anything else = HCA.
    window_size: int = 128
    compress_ratios: tuple[int, ...] = (0, 0) + (4, 128) * 20 + (4, 0)
    # DeepSeek's inference code turns on the overlapping windows and the indexer when the ratio is 4
    # (`overlap = compress_ratio == 4`); transformers does it by layer type. Kept as a field so a
    # transformers config whose CSA rate is not 4 still loads faithfully.
    sparse_ratio: int = 4
    index_n_heads: int = 64
    index_head_dim: int = 128
    index_topk: int = 512

    # Mixture of experts.
    moe_inter_dim: int = 2048
    n_routed_experts: int = 256
    n_shared_experts: int = 1
    n_activated_experts: int = 6
    n_hash_layers: int = 3
    score_func: str = "sqrtsoftplus"
    route_scale: float = 1.5
    swiglu_limit: float = 10.0
    # Renormalise the chosen experts' weights to sum 1? None = DeepSeek's rule (yes, except for
    # softmax scoring). transformers always renormalises; True reproduces it.
    route_norm: bool | None = None

    # RoPE: plain on window-only layers, YaRN on compressed layers (DeepSeek: `original_seq_len`).
    rope_theta: float = 10000.0
    compress_rope_theta: float = 160000.0
    rope_factor: float = 16.0
    original_seq_len: int = 65536
    beta_fast: int = 32
    beta_slow: int = 1
    max_seq_len: int = 1048576

    # Manifold-constrained hyper-connections.
    hc_mult: int = 4
    hc_sinkhorn_iters: int = 20
    hc_eps: float = 1e-6

    n_mtp_layers: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 1

    # Numerics: False = exact (matches transformers); True = the fake-quantisation points of
    # DeepSeek's inference code (FP8 on the non-rope KV dims, Hadamard + FP4 on indexer q/k).
    fake_quant: bool = False

    # Free-form provenance (flavor name, source path); never changes behaviour.
    name: str = field(default="", compare=False)

    # ------------------------------------------------------------------ validation

    def __post_init__(self) -> None:
        object.__setattr__(self, "compress_ratios", tuple(int(r) for r in self.compress_ratios))
        need = self.n_layers + self.n_mtp_layers
        if len(self.compress_ratios) != need:
            raise ConfigError(
                f"compress_ratios has {len(self.compress_ratios)} entries; expected n_layers + n_mtp_layers "
                f"= {self.n_layers} + {self.n_mtp_layers} = {need} (the MTP blocks' ratios come last)"
            )
        for i, r in enumerate(self.compress_ratios):
            if r < 0:
                raise ConfigError(f"compress_ratios[{i}] = {r}; ratios are 0 (window only) or positive")
        if self.score_func not in SCORE_FUNCS:
            raise ConfigError(f"score_func = {self.score_func!r}; expected one of {SCORE_FUNCS}")
        if self.head_dim % 2 or self.rope_head_dim % 2 or self.rope_head_dim > self.head_dim:
            raise ConfigError(
                f"rope_head_dim = {self.rope_head_dim} must be even and <= head_dim = {self.head_dim}"
            )
        if (self.n_heads * self.head_dim) % self.o_groups:
            raise ConfigError(f"n_heads * head_dim = {self.n_heads * self.head_dim} must divide by o_groups")
        if self.n_activated_experts > self.n_routed_experts:
            raise ConfigError(
                f"n_activated_experts = {self.n_activated_experts} exceeds n_routed_experts = "
                f"{self.n_routed_experts}"
            )
        if self.n_shared_experts not in (0, 1):
            raise ConfigError(f"n_shared_experts = {self.n_shared_experts}; V4 has exactly one (or none)")
        if self.n_hash_layers > self.n_layers:
            raise ConfigError(f"n_hash_layers = {self.n_hash_layers} exceeds n_layers = {self.n_layers}")
        if self.hc_mult < 1:
            raise ConfigError(f"hc_mult = {self.hc_mult}; need at least one residual stream")

    # ------------------------------------------------------------------ derived facts

    @property
    def nope_head_dim(self) -> int:
        return self.head_dim - self.rope_head_dim

    def ratio(self, layer: int) -> int:
        """Compression ratio of main layer `layer` (or MTP block `layer - n_layers`)."""
        return self.compress_ratios[layer]

    def is_sparse(self, layer: int) -> bool:
        """CSA layer: overlapping compressor plus lightning indexer."""
        return self.compress_ratios[layer] == self.sparse_ratio

    def layer_kind(self, layer: int) -> str:
        """'window', 'csa' or 'hca' for a main layer or MTP block index."""
        r = self.compress_ratios[layer]
        return "window" if r == 0 else ("csa" if r == self.sparse_ratio else "hca")

    def is_hash(self, layer: int) -> bool:
        """Hash-routed MoE (a fixed token-id -> experts table). MTP blocks never are."""
        return layer < self.n_hash_layers

    @property
    def normalize_route_weights(self) -> bool:
        return self.score_func != "softmax" if self.route_norm is None else self.route_norm

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ plain dict / JSON

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["compress_ratios"] = list(self.compress_ratios)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config fields {unknown}; known fields: {sorted(known)}")
        return cls(**d)

    # ------------------------------------------------------------------ Hugging Face config.json

    def to_hf_dict(self) -> dict[str, Any]:
        """config.json in the layout transformers' DeepseekV4Config reads and writes.

        Also carries the official release's legacy keys (``compress_ratios`` with the MTP entry,
        ``num_hash_layers``) so DeepSeek's own tools and ours read back every field.
        """
        layer_types, rates = [], {}
        for i in range(self.n_layers):
            kind = self.layer_kind(i)
            r = self.compress_ratios[i]
            if kind == "window":
                layer_types.append(HF_WINDOW)
                continue
            name = HF_CSA if kind == "csa" else HF_HCA
            if rates.setdefault(name, r) != r:
                raise ConfigError(
                    f"transformers' config has one compression rate per layer type; layer {i} has {name} rate "
                    f"{r} but an earlier layer has {rates[name]}"
                )
            layer_types.append(name)
        rates.setdefault(HF_CSA, self.sparse_ratio)
        rates.setdefault(HF_HCA, 128)
        compress_rope: dict[str, Any] = {
            "rope_theta": self.compress_rope_theta,
            "partial_rotary_factor": self.rope_head_dim / self.head_dim,
        }
        if self.original_seq_len > 0:
            compress_rope.update(
                rope_type="yarn",
                factor=self.rope_factor,
                original_max_position_embeddings=self.original_seq_len,
                beta_fast=self.beta_fast,
                beta_slow=self.beta_slow,
                attention_factor=1.0,
            )
        else:
            compress_rope["rope_type"] = "default"
        d: dict[str, Any] = {
            "architectures": ["DeepseekV4ForCausalLM"],
            "model_type": "deepseek_v4",
            "vocab_size": self.vocab_size,
            "hidden_size": self.dim,
            "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": 1,
            "head_dim": self.head_dim,
            "qk_rope_head_dim": self.rope_head_dim,
            "partial_rotary_factor": self.rope_head_dim / self.head_dim,
            "q_lora_rank": self.q_lora_rank,
            "o_groups": self.o_groups,
            "o_lora_rank": self.o_lora_rank,
            "rms_norm_eps": self.norm_eps,
            "sliding_window": self.window_size,
            "layer_types": layer_types,
            "compress_rates": rates,
            "compress_ratios": list(self.compress_ratios),
            "index_n_heads": self.index_n_heads,
            "index_head_dim": self.index_head_dim,
            "index_topk": self.index_topk,
            "moe_intermediate_size": self.moe_inter_dim,
            "n_routed_experts": self.n_routed_experts,
            "n_shared_experts": self.n_shared_experts,
            "num_experts_per_tok": self.n_activated_experts,
            "mlp_layer_types": ["hash_moe" if self.is_hash(i) else "moe" for i in range(self.n_layers)],
            "num_hash_layers": self.n_hash_layers,
            "scoring_func": self.score_func,
            "routed_scaling_factor": self.route_scale,
            "norm_topk_prob": True,
            "swiglu_limit": self.swiglu_limit,
            "rope_theta": self.rope_theta,
            "compress_rope_theta": self.compress_rope_theta,
            "rope_parameters": {
                "main": {
                    "rope_type": "default",
                    "rope_theta": self.rope_theta,
                    "partial_rotary_factor": self.rope_head_dim / self.head_dim,
                },
                "compress": compress_rope,
            },
            "max_position_embeddings": self.max_seq_len,
            "hc_mult": self.hc_mult,
            "hc_sinkhorn_iters": self.hc_sinkhorn_iters,
            "hc_eps": self.hc_eps,
            "num_nextn_predict_layers": self.n_mtp_layers,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "tie_word_embeddings": False,
            "hidden_act": "silu",
            "attention_bias": False,
            "attention_dropout": 0.0,
        }
        # Keys of ours that transformers would not understand travel under one namespace.
        extra = {}
        if self.sparse_ratio != 4:
            extra["sparse_ratio"] = self.sparse_ratio
        if self.route_norm is not None:
            extra["route_norm"] = self.route_norm
        if extra:
            d["trillion"] = extra
        return d

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any], **overrides: Any) -> ModelConfig:
        """Read an official or transformers-written config.json."""

        def get(key: str, default: Any = None, *, required: bool = True) -> Any:
            if key in d:
                return d[key]
            if required and default is None:
                raise ConfigError(f"config.json lacks the required key {key!r}")
            return default

        if d.get("model_type") not in (None, "deepseek_v4"):
            raise ConfigError(f"config.json has model_type {d.get('model_type')!r}; expected 'deepseek_v4'")
        n_layers = int(get("num_hidden_layers"))
        n_mtp = int(d.get("num_nextn_predict_layers", 1))
        head_dim = int(get("head_dim"))
        if "qk_rope_head_dim" in d:
            rope_head_dim = int(d["qk_rope_head_dim"])
        else:
            rope_head_dim = round(head_dim * float(d.get("partial_rotary_factor", 64 / 512)))
        extra = dict(d.get("trillion", {}))
        rates = d.get("compress_rates") or {}
        sparse_ratio = int(extra.pop("sparse_ratio", rates.get(HF_CSA, 4)))

        if "compress_ratios" in d:
            ratios = [int(r) for r in d["compress_ratios"]]
            if len(ratios) == n_layers:  # no MTP entry: DeepSeek's MTP block is window-only
                ratios.append(0)
            ratios = ratios[: n_layers + n_mtp] + [0] * max(0, n_layers + n_mtp - len(ratios))
        elif "layer_types" in d:
            by_type = {HF_WINDOW: 0, HF_CSA: int(rates.get(HF_CSA, 4)), HF_HCA: int(rates.get(HF_HCA, 128))}
            try:
                ratios = [by_type[t] for t in d["layer_types"]] + [0] * n_mtp
            except KeyError as e:
                raise ConfigError(f"config.json layer_types has unknown entry {e.args[0]!r}") from None
        else:
            raise ConfigError("config.json has neither compress_ratios nor layer_types")

        if "num_hash_layers" in d:
            n_hash = int(d["num_hash_layers"])
        elif "mlp_layer_types" in d:
            n_hash = sum(1 for t in d["mlp_layer_types"] if t == "hash_moe")
        else:
            n_hash = 3

        # RoPE of the compressed layers: official `rope_scaling` or transformers' nested parameters.
        yarn = d.get("rope_scaling") or {}
        params = d.get("rope_parameters") or {}
        if isinstance(params.get("compress"), dict):
            yarn = params["compress"] if params["compress"].get("rope_type") == "yarn" else {}
        rope_theta = float(d.get("rope_theta", params.get("main", {}).get("rope_theta", 10000.0)))
        compress_theta = float(d.get("compress_rope_theta", params.get("compress", {}).get("rope_theta", 160000.0)))

        kw: dict[str, Any] = {
            "vocab_size": int(get("vocab_size")),
            "dim": int(get("hidden_size")),
            "n_layers": n_layers,
            "n_heads": int(get("num_attention_heads")),
            "head_dim": head_dim,
            "rope_head_dim": rope_head_dim,
            "q_lora_rank": int(get("q_lora_rank")),
            "o_groups": int(get("o_groups")),
            "o_lora_rank": int(get("o_lora_rank")),
            "norm_eps": float(d.get("rms_norm_eps", 1e-6)),
            "window_size": int(get("sliding_window")),
            "compress_ratios": tuple(ratios),
            "sparse_ratio": sparse_ratio,
            "index_n_heads": int(d.get("index_n_heads", 64)),
            "index_head_dim": int(d.get("index_head_dim", 128)),
            "index_topk": int(d.get("index_topk", 512)),
            "moe_inter_dim": int(get("moe_intermediate_size")),
            "n_routed_experts": int(get("n_routed_experts")),
            "n_shared_experts": int(d.get("n_shared_experts", 1)),
            "n_activated_experts": int(get("num_experts_per_tok")),
            "n_hash_layers": n_hash,
            "score_func": str(d.get("scoring_func", "sqrtsoftplus")),
            "route_scale": float(d.get("routed_scaling_factor", 1.0)),
            "swiglu_limit": float(d.get("swiglu_limit", 10.0)),
            "route_norm": extra.pop("route_norm", None),
            "rope_theta": rope_theta,
            "compress_rope_theta": compress_theta,
            "rope_factor": float(yarn.get("factor", 1.0)) if yarn else 1.0,
            "original_seq_len": int(yarn.get("original_max_position_embeddings", 0)) if yarn else 0,
            "beta_fast": int(yarn.get("beta_fast", 32)) if yarn else 32,
            "beta_slow": int(yarn.get("beta_slow", 1)) if yarn else 1,
            "max_seq_len": int(d.get("max_position_embeddings", 1048576)),
            "hc_mult": int(d.get("hc_mult", 4)),
            "hc_sinkhorn_iters": int(d.get("hc_sinkhorn_iters", 20)),
            "hc_eps": float(d.get("hc_eps", 1e-6)),
            "n_mtp_layers": n_mtp,
            "bos_token_id": _first_id(d.get("bos_token_id", 0)),
            "eos_token_id": _first_id(d.get("eos_token_id", 1)),
        }
        kw.update(overrides)
        return cls(**kw)

    @classmethod
    def from_deepseek_dict(cls, d: dict[str, Any], **overrides: Any) -> ModelConfig:
        """Read DeepSeek's ``inference/config.json`` (ModelArgs field names)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if "n_layers" in d and "n_mtp_layers" not in d:
            kw["n_mtp_layers"] = len(d.get("compress_ratios", ())) - int(d["n_layers"]) or 1
        kw.update(overrides)
        return cls(**kw)

    @classmethod
    def from_file(cls, path: str | Path) -> ModelConfig:
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        if "model_type" in d or "hidden_size" in d:
            return cls.from_hf_dict(d, name=str(path.parent))
        return cls.from_deepseek_dict(d, name=str(path.parent))


def _first_id(v: Any) -> int:
    if isinstance(v, (list, tuple)):
        return int(v[0])
    return int(v) if v is not None else 0


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


__all__ = ["SCORE_FUNCS", "ConfigError", "ModelConfig", "ceil_div"]
