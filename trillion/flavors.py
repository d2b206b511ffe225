"""Named model flavors: the released V4 configs, our ~1T flavor, and small ones for CPUs and tests.

Every flavor is a `ModelConfig`; nothing in the code checks a flavor's name.

* v4-pro, v4-flash: DeepSeek's released configs (inference/config.json of each repository).
* v4-1t: the reported ~1T-total / ~37B-activated, 1M-context model "built on the V4 architecture";
  DeepSeek did not publish its dims, so we chose them: V4-Pro's trunk (dim 7168, 61 layers, same
  CSA/HCA schedule, q/o ranks, indexer) with 64 heads in 8 output groups and 384 routed experts of
  width 2048, top-8. That gives 1.05T total / 37B activated (see `trillion params v4-1t`).
* tiny: seconds-fast tests; small: CPU training; demo-random: the architecture of the shipped demo model
  (the name `demo` loads its trained weights, trillion/assets); bench-*: benchmark models that
  llama.cpp can also load (HCA ratio 128, index head dim a multiple of 64).
"""

from __future__ import annotations

from .config import ModelConfig
from .errors import UnknownName

PRO_RATIOS = (128, 128) + (4, 128) * 29 + (4, 0)
FLASH_RATIOS = (0, 0) + (4, 128) * 20 + (4, 0)

FLAVORS: dict[str, ModelConfig] = {
    "v4-pro": ModelConfig(
        dim=7168,
        n_layers=61,
        n_heads=128,
        q_lora_rank=1536,
        o_groups=16,
        o_lora_rank=1024,
        compress_ratios=PRO_RATIOS,
        index_topk=1024,
        moe_inter_dim=3072,
        n_routed_experts=384,
        n_activated_experts=6,
        route_scale=2.5,
        name="v4-pro",
    ),
    "v4-flash": ModelConfig(name="v4-flash"),  # the dataclass defaults are V4-Flash
    "v4-1t": ModelConfig(
        dim=7168,
        n_layers=61,
        n_heads=64,
        q_lora_rank=1536,
        o_groups=8,
        o_lora_rank=1024,
        compress_ratios=PRO_RATIOS,
        index_topk=1024,
        moe_inter_dim=2048,
        n_routed_experts=384,
        n_activated_experts=8,
        route_scale=2.5,
        name="v4-1t",
    ),
    # Every layer type, two hash layers, ratios small enough that short sequences cross many blocks.
    "tiny": ModelConfig(
        vocab_size=512,
        dim=64,
        n_layers=4,
        n_heads=4,
        head_dim=32,
        rope_head_dim=8,
        q_lora_rank=32,
        o_groups=2,
        o_lora_rank=16,
        window_size=16,
        compress_ratios=(0, 4, 16, 4, 0),
        index_n_heads=16,
        index_head_dim=16,
        index_topk=4,
        moe_inter_dim=32,
        n_routed_experts=8,
        n_activated_experts=2,
        n_hash_layers=1,
        original_seq_len=256,
        max_seq_len=4096,
        name="tiny",
    ),
    "small": ModelConfig(
        vocab_size=4096,
        dim=256,
        n_layers=6,
        n_heads=4,
        head_dim=64,
        rope_head_dim=16,
        q_lora_rank=128,
        o_groups=2,
        o_lora_rank=128,
        window_size=64,
        compress_ratios=(0, 4, 32, 4, 32, 4, 0),
        index_n_heads=8,
        index_head_dim=64,
        index_topk=32,
        moe_inter_dim=256,
        n_routed_experts=8,
        n_activated_experts=2,
        n_hash_layers=1,
        original_seq_len=4096,
        max_seq_len=65536,
        name="small",
    ),
    # The architecture of the shipped demo model (trillion/assets/demo, docs/training.md), here with
    # random weights (`demo` names the trained model): sized for a 2-core CPU, about
    # 8M parameters, 16 MB in bf16. Every V4 piece at small scale: a hash-routed window layer, CSA
    # (ratio 4, indexer top-16) and HCA (ratio 16) layers, so 256-token contexts use compression,
    # 8 routed experts + 1 shared, mHC with 4 streams, and a window-only MTP block.
    "demo-random": ModelConfig(
        vocab_size=4096,
        dim=256,
        n_layers=4,
        n_heads=4,
        head_dim=64,
        rope_head_dim=16,
        q_lora_rank=128,
        o_groups=2,
        o_lora_rank=128,
        window_size=64,
        compress_ratios=(0, 4, 16, 4, 0),
        index_n_heads=8,
        index_head_dim=32,
        index_topk=16,
        moe_inter_dim=128,
        n_routed_experts=8,
        n_activated_experts=2,
        n_hash_layers=1,
        original_seq_len=4096,
        max_seq_len=65536,
        name="demo-random",
    ),
    # ~94M total: the size of the llama.cpp comparison in shared/reference/anchors.md.
    "bench-94m": ModelConfig(
        vocab_size=32000,
        dim=512,
        n_layers=8,
        n_heads=8,
        head_dim=128,
        rope_head_dim=64,
        q_lora_rank=256,
        o_groups=4,
        o_lora_rank=256,
        window_size=128,
        compress_ratios=(0, 4, 128, 4, 128, 4, 128, 4, 0),
        index_n_heads=16,
        index_head_dim=64,
        index_topk=64,
        moe_inter_dim=416,
        n_routed_experts=8,
        n_activated_experts=2,
        n_hash_layers=1,
        original_seq_len=4096,
        max_seq_len=131072,
        name="bench-94m",
    ),
    # ~1B total for the bandwidth-roofline benchmark.
    "bench-1b": ModelConfig(
        vocab_size=32000,
        dim=1024,
        n_layers=12,
        n_heads=16,
        head_dim=128,
        rope_head_dim=64,
        q_lora_rank=512,
        o_groups=4,
        o_lora_rank=512,
        window_size=128,
        compress_ratios=(0,) + (4, 128) * 5 + (4, 0),
        index_n_heads=16,
        index_head_dim=64,
        index_topk=128,
        moe_inter_dim=768,
        n_routed_experts=24,
        n_activated_experts=4,
        n_hash_layers=1,
        original_seq_len=4096,
        max_seq_len=131072,
        name="bench-1b",
    ),
}


def get_flavor(name: str) -> ModelConfig:
    try:
        return FLAVORS[name]
    except KeyError:
        raise UnknownName(f"unknown flavor {name!r}; known flavors: {', '.join(FLAVORS)}") from None
