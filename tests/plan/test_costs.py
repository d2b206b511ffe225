"""trillion.plan.costs against hand arithmetic, trillion.params and trillion.kvcost."""

import pytest

from trillion.config import ModelConfig
from trillion.flavors import FLAVORS
from trillion.kvcost import V3Config, kv_cost, v4_attention_flops, v4_matmul_params
from trillion.params import count_params
from trillion.plan.costs import (
    PRECISIONS,
    linear_bytes,
    sum_floor,
    sum_min,
    sum_min_floor,
    v3_costs,
    v4_costs,
)

TINY = FLAVORS["tiny"]
# tests/test_kvcost.py's hand config: three main layers (window, CSA ratio 4, HCA ratio 16), a window MTP block
HAND = ModelConfig(
    vocab_size=64, dim=32, n_layers=3, n_heads=2, head_dim=128, rope_head_dim=64, q_lora_rank=16,
    o_groups=2, o_lora_rank=8, window_size=8, compress_ratios=(0, 4, 16, 0), index_n_heads=4,
    index_head_dim=64, index_topk=5, moe_inter_dim=8, n_routed_experts=4, n_activated_experts=2,
    n_hash_layers=1, name="hand",
)


def test_linear_bytes_by_hand():
    assert linear_bytes("fp8", 256, 300) == 256 * 300 + 2 * 3  # e4m3 + one byte per 128x128 block
    assert linear_bytes("hif8", 256, 300) == 76806
    assert linear_bytes("mxfp4", 4, 64) == 4 * 32 + 4 * 2  # two codes per byte + a byte per 32 inputs
    assert linear_bytes("int8", 10, 20) == 200 + 2 * 10  # a bf16 scale per output channel
    assert (linear_bytes("bf16", 3, 5), linear_bytes("fp32", 3, 5)) == (30, 60)


@pytest.mark.parametrize("flavor", ["tiny", "demo-random", "bench-94m"])
def test_v4_totals_are_trillion_params(flavor):
    cfg = FLAVORS[flavor]
    c, r = v4_costs(cfg), count_params(cfg)
    hash_table = cfg.vocab_size * cfg.n_activated_experts * cfg.n_hash_layers  # tid2eid, int64
    assert c.params == r.total_with_mtp + hash_table
    assert sum(c.weights["release"].values()) == r.bytes_release_with_mtp
    assert sum(c.weights["bf16"].values()) == r.bytes_bf16_with_mtp + 8 * hash_table
    assert sum(c.weights["fp32"].values()) == 2 * r.bytes_bf16_with_mtp + 8 * hash_table
    assert sum(c.matmul.values()) == v4_matmul_params(cfg)
    assert c.name == flavor and set(c.weights) == set(PRECISIONS)


def test_tiny_shares_by_hand():
    c = v4_costs(TINY)  # dim 64, 4 heads x 32, q_lora 32, 2 groups x 16, 8 experts of width 32, top-2
    expert = 3 * 64 * 32  # w1, w2, w3
    assert c.expert_params == expert
    blocks = TINY.n_layers + TINY.n_mtp_layers
    assert c.weights["bf16"]["expert"] == 2 * blocks * 8 * expert
    # release: each [32, 64] / [64, 32] weight in MXFP4 is 32 * 32 + 32 * 2 = 64 * 16 + 64 = 1088 bytes
    assert c.weights["release"]["expert"] == blocks * 8 * 3 * 1088
    # split by tp: wq_b [128, 32], wo_a [32, 64], wo_b [64, 32], 4 sinks per block; embedding + head
    per_block = 128 * 32 + 32 * 64 + 64 * 32 + 4
    assert c.weights["bf16"]["tp"] == 2 * blocks * per_block + 2 * 2 * 512 * 64  # bf16 casts the sinks too
    # release: FP8 with one scale byte per 128x128 block (one block each here), fp32 sinks, bf16 embedding / head
    assert c.weights["release"]["tp"] == blocks * (per_block - 4 + 3) + 4 * 4 * blocks + 2 * 2 * 512 * 64
    assert c.embedding["bf16"] == 2 * 512 * 64
    assert c.matmul["tp"] == TINY.n_layers * (per_block - 4) + 512 * 64  # the head, not the embedding
    assert c.matmul["expert"] == 2 * expert * TINY.n_layers  # top-2 in each of the 4 main layers
    assert c.mtp_weights["bf16"]["expert"] == 2 * 8 * expert


def test_state_bytes_by_hand():
    c = v4_costs(HAND)
    n = 40
    assert c.state_bytes(n, "release") == kv_cost(HAND, n).bytes + kv_cost(HAND, n).mtp_bytes
    assert c.state_bytes(n, "bf16") == kv_cost(HAND, n).bytes_bf16 + kv_cost(HAND, n).mtp_bytes_bf16
    # fp32: 4 bytes a value. Rings: 8 vectors x 4 blocks x 512 B; CSA: 10 entries (512 B) + 10 keys (256 B);
    # HCA: 2 entries; compressor state, float32 at any precision: CSA 2 x (2*4) x (2*128) x 4 plus its
    # indexer's 2 x (2*4) x (2*64) x 4; HCA 2 x 16 x 128 x 4.
    rings, csa, hca = 8 * 4 * 512, 10 * 512 + 10 * 256, 2 * 512
    compressors = 2 * 8 * 256 * 4 + 2 * 8 * 128 * 4 + 2 * 16 * 128 * 4
    assert c.state_bytes(n, "fp32") == rings + csa + hca + compressors == 66048


def test_state_read_per_decode_token_by_hand():
    c = v4_costs(HAND)
    vec, key = 64 + 1 + 2 * 64, 32 + 2  # release: 64 FP8 + a scale byte + 64 BF16 rope; 64 FP4 + 2 scales
    compressors = 2 * 8 * 256 * 4 + 2 * 8 * 128 * 4 + 2 * 16 * 128 * 4
    # window layer: 8 ring slots; CSA: ring + top-5 of 10 entries, and all 10 indexer keys; HCA: ring + 2 entries
    main = 8 * vec + (8 + 5) * vec + 10 * key + (8 + 2) * vec + compressors
    assert c.state_read_bytes(40, "release") == main == 47283
    assert c.state_read_bytes(40, "release", mtp=True) == 8 * vec
    assert c.attention_flops(40) == tuple(sum(v4_attention_flops(HAND, i, 40)[j] for i in range(3)) for j in (0, 1))


@pytest.mark.parametrize("length", [1, 2, 7, 8, 9, 40, 63, 64, 65, 100, 333])
def test_closed_form_sums_equal_brute_force(length):
    assert sum_floor(length, 4) == sum(n // 4 for n in range(1, length + 1))
    assert sum_min(length, 8) == sum(min(n, 8) for n in range(1, length + 1))
    assert sum_min_floor(length, 4, 5) == sum(min(5, n // 4) for n in range(1, length + 1))


@pytest.mark.parametrize("cfg", [HAND, TINY, FLAVORS["small"]], ids=["hand", "tiny", "small"])
@pytest.mark.parametrize("length", [1, 5, 17, 64, 129, 300])
def test_prefill_attention_is_the_sum_over_positions(cfg, length):
    brute = [sum(v4_attention_flops(cfg, i, n)[j] for i in range(cfg.n_layers) for n in range(1, length + 1))
             for j in (0, 1)]
    assert v4_costs(cfg).prefill_attention_flops(length) == tuple(brute)


def test_v3_by_hand():
    v, c = V3Config(), v3_costs()
    mtp_own = sum(c.mtp_weights["bf16"].values()) // 2
    main = c.params - mtp_own
    assert abs(main / 671e9 - 1) < 1e-3  # DeepSeek: 671B
    assert abs((c.params + 2 * 129280 * 7168) / 685e9 - 1) < 3e-3  # 685B with MTP (its own embedding + head)
    assert sum(c.matmul.values()) == v.matmul_params()
    assert c.matmul["tp"] == 61 * (1536 * 128 * 192 + 512 * 128 * 256 + 128 * 128 * 7168) + 129280 * 7168
    assert c.matmul["expert"] == 8 * 3 * 7168 * 2048 * 58
    assert c.state_bytes(4989, "release") == 62 * 4989 * 1152  # BF16 latent, 61 layers + MTP
    assert c.state_read_bytes(100, "bf16") == 61 * 100 * 1152
    assert c.attention_flops(100) == (61 * 100 * (2 * 128 * 576 + 2 * 128 * 512), 0)
    assert c.prefill_attention_flops(10) == (61 * 55 * (2 * 128 * 192 + 2 * 128 * 128), 0)
    assert c.weights["release"] == c.weights["fp8"]  # V3's release is FP8, experts too
