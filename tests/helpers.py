"""Shared test helpers: tiny configs and models with every parameter made non-trivial."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from trillion.checkpoint.layouts import HF, to_checkpoint_name
from trillion.config import ModelConfig
from trillion.model import Transformer
from trillion.model.init import init_weights


def mixed_config(**overrides) -> ModelConfig:
    """Window-only, CSA and HCA layers, two hash layers, 16 index heads (no indexer ties)."""
    kw = {
        "vocab_size": 97,
        "dim": 64,
        "n_layers": 5,
        "n_heads": 4,
        "head_dim": 32,
        "rope_head_dim": 8,
        "q_lora_rank": 24,
        "o_groups": 2,
        "o_lora_rank": 16,
        "window_size": 8,
        "compress_ratios": (0, 4, 16, 4, 16, 0),
        "index_n_heads": 16,
        "index_head_dim": 16,
        "index_topk": 3,
        "moe_inter_dim": 24,
        "n_routed_experts": 6,
        "n_activated_experts": 2,
        "n_hash_layers": 2,
        "route_scale": 1.7,
        "swiglu_limit": 2.0,
        "rope_factor": 4.0,
        "original_seq_len": 32,
        "name": "mixed-test",
    }
    kw.update(overrides)
    return ModelConfig(**kw)


@torch.no_grad()
def random_model(cfg: ModelConfig, seed: int = 0, dtype=torch.float32) -> Transformer:
    """A model whose every parameter (sinks, biases, ape, mHC, norms) is random and non-zero."""
    torch.manual_seed(seed)
    model = init_weights(Transformer(cfg), seed=seed, std=0.1)
    g = torch.Generator().manual_seed(seed + 1)
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if name.endswith("norm.weight") or leaf.endswith("_scale"):
            p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
        elif leaf in ("attn_sink", "ape", "bias") or leaf.endswith("_base"):
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
    return model.to(dtype).eval()


def save_hf_reference(model: Transformer, path: Path) -> Path:
    """Write `model` the way transformers' save_pretrained does (for the reference model)."""
    path.mkdir(parents=True, exist_ok=True)
    tensors = {to_checkpoint_name(k, HF): v.contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(model.cfg.to_hf_dict(), indent=2))
    return path


def load_hf_reference(path: Path):
    from transformers import DeepseekV4ForCausalLM

    return DeepseekV4ForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
