"""Shared test helpers: tiny configs and models with every parameter made non-trivial."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

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


# One model's weights in two copies (in memory and loaded from a checkpoint, or two loads) give the
# same logits up to float32 rounding, not bit for bit. The loader memory-maps a checkpoint whose
# tensors load as stored, so they sit at 4-byte-aligned addresses inside the file, where a fresh
# tensor is 64-byte aligned; a BLAS may split the sums differently for them. MKL's SSE4.2 path, the
# one it runs on AMD CPUs, does: mixed_config's logits move by 4.8e-7 (|logits| ~ 4). What a save
# and load must keep exactly is the weights: assert_same_weights checks them bit for bit.
SAME_WEIGHTS_LOGITS = {"rtol": 1e-5, "atol": 1e-5}  # ~20x that float32 rounding


def assert_same_weights(got: nn.Module, want: nn.Module) -> None:
    """got's state dict holds want's tensors under the same names, bit for bit (dtype, shape, bytes)."""
    a, b = got.state_dict(), want.state_dict()
    assert a.keys() == b.keys(), sorted(a.keys() ^ b.keys())
    for name, t in b.items():
        assert a[name].dtype == t.dtype and a[name].shape == t.shape, name
        assert torch.equal(_bytes(a[name]), _bytes(t)), name


def _bytes(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


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
