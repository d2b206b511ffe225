"""Attention-state bytes and decode FLOPs (trillion.kvcost) against hand arithmetic, the engine's
own state pool, and the V4 report's long-context figures."""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import pytest
import torch

from trillion.cli import kv as kv_cli
from trillion.config import ModelConfig
from trillion.flavors import FLAVORS
from trillion.kvcost import (
    PARTS,
    V32,
    index_key_bytes,
    kv_cost,
    kv_vector_bytes,
    layer_state_bytes,
    markdown_table,
    parse_tokens,
)
from trillion.params import count_params

DOCS = Path(__file__).resolve().parents[1] / "docs" / "kv.md"
MILLION = 1024**2

# Three main layers, one of each kind, then a window-only MTP block.
HAND = ModelConfig(
    vocab_size=64, dim=32, n_layers=3, n_heads=2, head_dim=128, rope_head_dim=64, q_lora_rank=16,
    o_groups=2, o_lora_rank=8, window_size=8, compress_ratios=(0, 4, 16, 0), index_n_heads=4,
    index_head_dim=64, index_topk=5, moe_inter_dim=8, n_routed_experts=4, n_activated_experts=2,
    n_hash_layers=1, name="hand",
)


# ---------------------------------------------------------------------------------- hand arithmetic


def test_vector_sizes():
    # release: 64 non-rope dims in FP8 (64 B) + 1 UE8M0 byte + 64 rope dims in BF16 (128 B)
    assert kv_vector_bytes(HAND, "release") == 64 + 1 + 128
    assert kv_vector_bytes(HAND, "bf16") == 256
    # 64 FP4 values (32 B) + 2 UE8M0 bytes
    assert index_key_bytes(HAND, "release") == 32 + 2
    assert index_key_bytes(HAND, "bf16") == 128
    # The released models: 448 FP8 + 7 scales + 128 rope = 583 B per KV vector; 64 + 4 = 68 B per key.
    assert kv_vector_bytes(FLAVORS["v4-pro"], "release") == 583
    assert index_key_bytes(FLAVORS["v4-pro"], "release") == 68
    # V3.2: FlashMLA's 656 B and the indexer's 132 B; bf16 (512 + 64) * 2 and 128 * 2.
    assert (V32.latent_bytes("release"), V32.index_key_bytes("release")) == (656, 132)
    assert (V32.latent_bytes("bf16"), V32.index_key_bytes("bf16")) == (1152, 256)
    with pytest.raises(ValueError, match="precision"):
        kv_vector_bytes(HAND, "fp8")


def test_hand_config_bytes():
    n = 50
    c = kv_cost(HAND, n, matmul_params=1000)
    vec, key = 193, 34  # release bytes of a KV vector and an indexer key (test_vector_sizes)
    ring = 8 * vec  # window 8 < 50 tokens
    csa_entries, hca_entries = 50 // 4, 50 // 16  # 12, 3
    # float32 kv_state + score_state: CSA [2*4, 2*128] + indexer [2*4, 2*64]; HCA [16, 128]
    csa_state = 4 * (2 * 8 * 256 + 2 * 8 * 128)
    hca_state = 4 * (2 * 16 * 128)
    assert c.release["window"] == {"window_ring": ring, "entries": 0, "index_keys": 0, "compressor_state": 0}
    assert c.release["csa"] == {
        "window_ring": ring, "entries": 12 * vec, "index_keys": 12 * key, "compressor_state": csa_state,
    }
    assert c.release["hca"] == {
        "window_ring": ring, "entries": 3 * vec, "index_keys": 0, "compressor_state": hca_state,
    }
    assert c.release["mtp"] == {"window_ring": ring, "entries": 0, "index_keys": 0, "compressor_state": 0}
    csa = csa_entries * (vec + key) + csa_state
    assert c.bytes == 3 * ring + csa + hca_entries * vec + hca_state
    assert c.bytes == 48895
    assert c.mtp_bytes == ring
    # bf16: 256 B per vector, 128 B per key, compressor state unchanged
    assert c.bytes_bf16 == 3 * 8 * 256 + 12 * 256 + 12 * 128 + csa_state + 3 * 256 + hca_state
    assert c.mtp_bytes_bf16 == 8 * 256
    assert type(c.bytes) is int and type(c.v32_bytes) is int
    # V3.2 at the same N: 61 layers x 50 tokens x (656 + 132) B, bf16 x (1152 + 256) B
    assert c.v32_bytes == 61 * 50 * 788 == 2_403_400
    assert c.v32_bytes_bf16 == 61 * 50 * 1408


def test_hand_config_flops():
    c = kv_cost(HAND, 50, matmul_params=1000)
    per_key = 2 * 2 * 128 + 2 * 2 * 128  # score + value, 2 heads of 128
    keys = 8 + (8 + min(5, 12)) + (8 + 3)  # window; window + top-5 of 12; window + all 3
    indexer = (2 * 4 * 64 + 2 * 4) * 12  # 4 heads x 64 dims, + weighted head sum, over 12 keys
    assert c.flops_breakdown == {
        "weights": 2000, "attention_window": 8 * per_key, "attention_csa": 13 * per_key,
        "attention_hca": 11 * per_key, "indexer": indexer,
    }
    assert c.flops == 2000 + keys * per_key + indexer == 2000 + 32768 + 6240
    assert isinstance(c.flops, float) and isinstance(c.v32_flops, float)
    assert c.v32_flops == 2 * 37_476_106_240 + 61 * 50 * (2 * 128 * 576 + 2 * 128 * 512) + 61 * 50 * (
        2 * 64 * 128 + 2 * 64
    )


def test_v32_matmul_params():
    attn = 7168 * 1536 + 1536 * 128 * 192 + 7168 * 576 + 512 * 128 * 256 + 128 * 128 * 7168
    indexer = 1536 * 64 * 128 + 7168 * 128 + 7168 * 64
    dense = 3 * 7168 * 18432
    moe = 256 * 7168 + 9 * 3 * 7168 * 2048
    assert V32.matmul_params() == 61 * (attn + indexer) + 3 * dense + 58 * moe + 129280 * 7168
    assert V32.matmul_params() == 37_476_106_240
    assert abs(V32.matmul_params() / 37e9 - 1) < 0.02  # DeepSeek's "37B activated"


def test_v4_matmul_params_from_count_params():
    r = count_params(FLAVORS["tiny"])
    assert kv_cost(FLAVORS["tiny"], 10).matmul_params == r.active - FLAVORS["tiny"].dim


# ---------------------------------------------------------------------------------- shape of the curves


@pytest.mark.parametrize("flavor", ["tiny", "v4-flash", "v4-pro"])
def test_monotone_in_context(flavor):
    cfg = FLAVORS[flavor]
    ns = [0, 1, 3, 4, 15, 16, 17, 100, 127, 128, 129, 1000, 4096, 5000, 65536, MILLION]
    costs = [kv_cost(cfg, n, matmul_params=10**9) for n in ns]
    for a, b in itertools.pairwise(costs):
        for key in ("bytes", "bytes_bf16", "v32_bytes", "flops", "v32_flops"):
            assert getattr(b, key) >= getattr(a, key), (flavor, key, a.n_tokens, b.n_tokens)
    assert costs[-1].bytes > costs[0].bytes and costs[-1].flops > costs[0].flops


@pytest.mark.parametrize("flavor", ["tiny", "v4-pro"])
def test_window_saturates(flavor):
    cfg = FLAVORS[flavor]
    w = cfg.window_size
    for i in range(cfg.n_layers):
        ns = (w // 2, w, w + 1, 10 * w, MILLION)
        ring = [layer_state_bytes(cfg, i, n, "bf16")["window_ring"] for n in ns]
        assert ring[0] == (w // 2) * 2 * cfg.head_dim
        assert ring[1:] == [w * 2 * cfg.head_dim] * 4
    # On window-only layers nothing grows past the window; the compressed parts keep growing.
    a, b = kv_cost(cfg, w, matmul_params=1), kv_cost(cfg, 100 * w, matmul_params=1)
    assert a.release["mtp"] == b.release["mtp"]
    assert b.release["hca"]["entries"] > a.release["hca"]["entries"]


# ---------------------------------------------------------------------------------- the V4 report at 1M


@pytest.mark.parametrize("flavor", ["v4-pro", "v4-flash"])
def test_million_tokens_against_v32(flavor):
    c = kv_cost(FLAVORS[flavor], MILLION)
    print(f"\n{flavor} at 1M: state {c.bytes / 1e9:.2f} GB vs V3.2 {c.v32_bytes / 1e9:.2f} GB = "
          f"{c.bytes_ratio:.1%} (bf16 {c.bytes_ratio_bf16:.1%}); FLOPs {c.flops / 1e9:.1f} G vs "
          f"{c.v32_flops / 1e9:.1f} G = {c.flops_ratio:.1%}")
    # V4 report: ~10% of V3.2's KV cache and ~27% of its single-token FLOPs at 1M (Pro).
    assert 0.03 < c.bytes_ratio < 0.15
    assert 0.10 < c.flops_ratio < 0.40
    if flavor == "v4-pro":
        assert abs(c.bytes_ratio - 0.10) < 0.02 and abs(c.flops_ratio - 0.27) < 0.03
    # Independent check of the dominant terms: CSA entries + indexer keys, and V3.2's 61 x 788 B x N.
    csa_layers = sum(FLAVORS[flavor].is_sparse(i) for i in range(FLAVORS[flavor].n_layers))
    csa = c.release["csa"]
    assert csa["entries"] + csa["index_keys"] == csa_layers * (MILLION // 4) * (583 + 68)
    assert c.v32_bytes == 61 * MILLION * 788


# ---------------------------------------------------------------------------------- the engine's pool


def test_engine_pool_matches_bf16_formula():
    """StatePool(dtype=bf16) allocates exactly the bf16 formula, plus two spare pages per compressed layer.

    The pool keeps `max_seqs` spare pages per (stack, ratio) group beyond `max_entries` (a sequence's
    last page may be partly filled) and one scratch page that the decode path's fixed-width page
    tables point at, and always allocates the whole window ring: so compare at N >= window and
    subtract the spare pages (page_size = 1: one entry, and one indexer key on CSA, each).
    tests/engine/test_long_state.py checks the bytes a running sequence holds, part by part.
    """
    from trillion.engine.state import StatePool

    cfg = FLAVORS["tiny"]
    n = 100  # > window 16
    ratios = {cfg.ratio(i) for i in range(cfg.n_layers + cfg.n_mtp_layers) if cfg.ratio(i)}
    pool = StatePool(
        cfg, max_seqs=1, max_entries={r: n // r for r in ratios}, page_size=1, dtype=torch.bfloat16
    )
    size = lambda *ts: sum(t.numel() * t.element_size() for t in ts if t is not None)
    spare = 0
    for i, st in enumerate(pool.layers):
        want = layer_state_bytes(cfg, i, n, "bf16")
        assert st.ring.nbytes() == want["window_ring"]
        assert size(st.comp_kv, st.comp_score, st.idx_kv, st.idx_score) == want["compressor_state"]
        one_entry = 2 * 2 * cfg.head_dim if cfg.ratio(i) else 0
        one_key = 2 * 2 * cfg.index_head_dim if cfg.is_sparse(i) else 0
        assert (st.entries.nbytes() if st.entries else 0) == want["entries"] + one_entry
        assert (st.idx_keys.nbytes() if st.idx_keys else 0) == want["index_keys"] + one_key
        spare += one_entry + one_key
    c = kv_cost(cfg, n, matmul_params=1)
    assert pool.nbytes() == c.bytes_bf16 + c.mtp_bytes_bf16 + spare


# ---------------------------------------------------------------------------------- CLI and docs


def _run_cli(argv, capsys):
    parser = argparse.ArgumentParser(prog="trillion")
    kv_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    return capsys.readouterr().out


def test_parse_tokens():
    got = [parse_tokens(s) for s in ("4096", "128K", "1M", "1m", "2_000")]
    assert got == [4096, 131072, MILLION, MILLION, 2000]
    with pytest.raises(ValueError, match="128K"):
        parse_tokens("lots")


def test_cli_json(capsys):
    d = json.loads(_run_cli(["kv", "v4-flash", "--context", "128K", "--json"], capsys))
    c = kv_cost(FLAVORS["v4-flash"], 131072)
    for key in ("bytes", "v32_bytes", "bytes_bf16", "v32_bytes_bf16", "mtp_bytes"):
        assert type(d[key]) is int and d[key] == getattr(c, key)
    assert d["flops"] == c.flops and d["v32_flops"] == c.v32_flops
    assert d["release"]["csa"]["entries"] == c.release["csa"]["entries"]
    assert set(d["release"]["hca"]) == set(PARTS)
    d2 = json.loads(_run_cli(["kv", "v4-flash", "-n", "128K", "--batch", "3", "--json"], capsys))
    assert d2["bytes"] == 3 * c.bytes and d2["v32_bytes"] == 3 * c.v32_bytes and d2["batch"] == 3
    assert d2["flops"] == 3 * c.flops and d2["release"]["csa"]["entries"] == 3 * c.release["csa"]["entries"]


def test_cli_through_main(capsys):
    from trillion.cli.main import main

    assert main(["kv", "tiny", "--context", "1000", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bytes"] == kv_cost(FLAVORS["tiny"], 1000).bytes
    with pytest.raises(SystemExit):
        main(["kv", "tiny", "--context", "many"])
    assert "a token count like 4096, 128K or 1M" in capsys.readouterr().err


def test_cli_table_and_config_folder(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(HAND.to_hf_dict()))
    out = _run_cli(["kv", str(tmp_path), "--context", "50"], capsys)
    assert "csa x1" in out and "hca x1" in out and "indexer keys" in out and "ratio V4 / V3.2" in out
    assert "48.90 KB" in out  # c.bytes = 48,895 B (test_hand_config_bytes)
    assert "FP8 E4M3" in out and "FP4 E2M1" in out


def test_docs_table_is_current():
    costs = [kv_cost(FLAVORS[f], n) for f in ("v4-pro", "v4-flash", "v4-1t") for n in (4096, 131072, MILLION)]
    assert markdown_table(costs) in DOCS.read_text(), "docs/kv.md is stale: rerun the command it shows"
