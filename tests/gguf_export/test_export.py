"""GGUF export read back with `gguf`'s own reader: names, shapes, values, metadata, types.

The expected names and ggml shapes are written here from llama.cpp's loader
(src/models/deepseek4.cpp `load_arch_tensors`, llama-cpp-python 0.3.36), independently of
trillion.gguf.spec; Q8_0 blocks are decoded here from the format's definition (an f16 scale, then
32 int8 codes), not by `gguf`'s dequantiser.
"""

import numpy as np
import pytest
import torch
from helpers import mixed_config, random_model

from trillion.checkpoint import load_model, save_model
from trillion.cli.main import main

gguf = pytest.importorskip("gguf")
from trillion.gguf import export_gguf


def llamacpp_config(**overrides):
    """Every V4 layer kind llama.cpp runs (window, CSA-4, HCA-128), two hash layers, index dim 64.
    q_lora_rank 24 is not a multiple of 32, so q8_0 must fall back to F16 for wq_b / indexer wq_b."""
    kw = {"compress_ratios": (0, 4, 128, 4, 128, 0), "index_head_dim": 64, "name": "gguf-test"}
    return mixed_config(**{**kw, **overrides})


@pytest.fixture(scope="module")
def model():
    return random_model(llamacpp_config(), seed=5)


def loader_shapes(cfg):
    """{GGUF name: ggml shape (ne0, ne1, ...)} that llama.cpp's deepseek4 loader asks for."""
    D, V, hc, H, hd = cfg.dim, cfg.vocab_size, cfg.hc_mult, cfg.n_heads, cfg.head_dim
    q, og, olr, E, k, inter = (
        cfg.q_lora_rank,
        cfg.o_groups,
        cfg.o_lora_rank,
        cfg.n_routed_experts,
        cfg.n_activated_experts,
        cfg.moe_inter_dim,
    )
    mix = (2 + hc) * hc
    s = {
        "token_embd.weight": (D, V),
        "output_norm.weight": (D,),
        "output.weight": (D, V),
        "output_hc_fn.weight": (hc * D, hc),
        "output_hc_base.weight": (hc,),
        "output_hc_scale.weight": (1,),
    }
    for i in range(cfg.n_layers):
        b = f"blk.{i}."
        s |= {
            b + "attn_norm.weight": (D,),
            b + "attn_sinks.weight": (H,),
            b + "attn_q_a.weight": (D, q),
            b + "attn_q_a_norm.weight": (q,),
            b + "attn_q_b.weight": (q, H * hd),
            b + "attn_kv.weight": (D, hd),
            b + "attn_kv_a_norm.weight": (hd,),
            b + "attn_output_a.weight": (H * hd // og, og * olr),
            b + "attn_output_b.weight": (og * olr, D),
            b + "ffn_norm.weight": (D,),
            b + "ffn_gate_inp.weight": (D, E),
            b + "ffn_gate_exps.weight": (D, inter, E),
            b + "ffn_down_exps.weight": (inter, D, E),
            b + "ffn_up_exps.weight": (D, inter, E),
            b + "ffn_gate_shexp.weight": (D, inter),
            b + "ffn_down_shexp.weight": (inter, D),
            b + "ffn_up_shexp.weight": (D, inter),
        }
        for part in ("attn", "ffn"):
            s |= {
                b + f"hc_{part}_fn.weight": (hc * D, mix),
                b + f"hc_{part}_base.weight": (mix,),
                b + f"hc_{part}_scale.weight": (3,),
            }
        r = cfg.compress_ratios[i]
        if r:
            c = 2 if r == 4 else 1
            s |= {
                b + "attn_compressor_kv.weight": (D, c * hd),
                b + "attn_compressor_gate.weight": (D, c * hd),
                b + "attn_compressor_ape.weight": (c * hd, r),
                b + "attn_compressor_norm.weight": (hd,),
            }
        if r == 4:
            ih, nih = cfg.index_head_dim, cfg.index_n_heads
            s |= {
                b + "indexer.proj.weight": (D, nih),
                b + "indexer.attn_q_b.weight": (q, nih * ih),
                b + "indexer_compressor_kv.weight": (D, 2 * ih),
                b + "indexer_compressor_gate.weight": (D, 2 * ih),
                b + "indexer_compressor_ape.weight": (2 * ih, 4),
                b + "indexer_compressor_norm.weight": (ih,),
            }
        if i < cfg.n_hash_layers:
            s[b + "ffn_gate_tid2eid.weight"] = (k, V)
        else:
            s[b + "exp_probs_b.bias"] = (E,)
    return s


# GGUF name suffix -> our name suffix (the routed experts are stacked: `experts.*`).
OURS = {
    "attn_norm.weight": "attn_norm.weight",
    "attn_sinks.weight": "attn.attn_sink",
    "attn_q_a.weight": "attn.wq_a.weight",
    "attn_q_a_norm.weight": "attn.q_norm.weight",
    "attn_q_b.weight": "attn.wq_b.weight",
    "attn_kv.weight": "attn.wkv.weight",
    "attn_kv_a_norm.weight": "attn.kv_norm.weight",
    "attn_output_a.weight": "attn.wo_a.weight",
    "attn_output_b.weight": "attn.wo_b.weight",
    "ffn_norm.weight": "ffn_norm.weight",
    "ffn_gate_inp.weight": "ffn.gate.weight",
    "exp_probs_b.bias": "ffn.gate.bias",
    "ffn_gate_tid2eid.weight": "ffn.gate.tid2eid",
    "ffn_gate_exps.weight": "experts.w1",
    "ffn_down_exps.weight": "experts.w2",
    "ffn_up_exps.weight": "experts.w3",
    "ffn_gate_shexp.weight": "ffn.shared_experts.w1.weight",
    "ffn_down_shexp.weight": "ffn.shared_experts.w2.weight",
    "ffn_up_shexp.weight": "ffn.shared_experts.w3.weight",
    "attn_compressor_kv.weight": "attn.compressor.wkv.weight",
    "attn_compressor_gate.weight": "attn.compressor.wgate.weight",
    "attn_compressor_ape.weight": "attn.compressor.ape",
    "attn_compressor_norm.weight": "attn.compressor.norm.weight",
    "indexer.proj.weight": "attn.indexer.weights_proj.weight",
    "indexer.attn_q_b.weight": "attn.indexer.wq_b.weight",
    "indexer_compressor_kv.weight": "attn.indexer.compressor.wkv.weight",
    "indexer_compressor_gate.weight": "attn.indexer.compressor.wgate.weight",
    "indexer_compressor_ape.weight": "attn.indexer.compressor.ape",
    "indexer_compressor_norm.weight": "attn.indexer.compressor.norm.weight",
    "token_embd.weight": "embed.weight",
    "output_norm.weight": "norm.weight",
    "output.weight": "head.weight",
    "output_hc_fn.weight": "hc_head_fn",
    "output_hc_base.weight": "hc_head_base",
    "output_hc_scale.weight": "hc_head_scale",
}
for part in ("attn", "ffn"):
    for leaf in ("fn", "base", "scale"):
        OURS[f"hc_{part}_{leaf}.weight"] = f"hc_{part}_{leaf}"
MATRICES = {
    "token_embd.weight",
    "output.weight",
    "attn_q_a.weight",
    "attn_q_b.weight",
    "attn_kv.weight",
    "attn_output_a.weight",
    "attn_output_b.weight",
    "indexer.attn_q_b.weight",
    "ffn_gate_exps.weight",
    "ffn_down_exps.weight",
    "ffn_up_exps.weight",
    "ffn_gate_shexp.weight",
    "ffn_down_shexp.weight",
    "ffn_up_shexp.weight",
}


def expected_tensor(model, gguf_name):
    """Our tensor behind a GGUF name, as float32 (int for the hash table), in PyTorch's shape."""
    sd = model.state_dict()
    layer, _, suffix = (
        gguf_name.partition(".")[2].partition(".") if gguf_name.startswith("blk.") else ("", "", gguf_name)
    )
    ours = OURS[suffix]
    if not layer:
        return sd[ours]
    if ours.startswith("experts."):
        w = ours.split(".")[1]
        return torch.stack(
            [sd[f"layers.{layer}.ffn.experts.{e}.{w}.weight"] for e in range(model.cfg.n_routed_experts)]
        )
    return sd[f"layers.{layer}.{ours}"]


def q8_0_decode(raw: np.ndarray, shape) -> np.ndarray:
    """GGML Q8_0: blocks of 34 bytes along each row, an f16 scale d then 32 int8 codes q: x = d * q."""
    blocks = np.ascontiguousarray(raw).reshape(-1, 34)
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    q = blocks[:, 2:].copy().view(np.int8).astype(np.float32)
    return (d * q).reshape(shape)


def read(path):
    r = gguf.GGUFReader(path)
    return r, {t.name: t for t in r.tensors}


@pytest.mark.parametrize("type", ["f32", "f16", "q8_0"])
def test_tensors_read_back(model, tmp_path, type):
    path = export_gguf(model, tmp_path / f"m-{type}.gguf", type=type)
    reader, tensors = read(path)
    want_shapes = loader_shapes(model.cfg)
    assert set(tensors) == set(want_shapes)
    F32, F16, Q8, I32 = (gguf.GGMLQuantizationType[n] for n in ("F32", "F16", "Q8_0", "I32"))
    seen = set()
    for name, t in tensors.items():
        assert tuple(int(n) for n in t.shape) == want_shapes[name], name
        want = expected_tensor(model, name)
        torch_shape = tuple(reversed(want_shapes[name]))
        assert tuple(want.shape) == torch_shape, name
        suffix = name.split(".", 2)[-1] if name.startswith("blk.") else name
        if suffix == "ffn_gate_tid2eid.weight":
            assert t.tensor_type == I32 and np.array_equal(t.data, want.numpy().astype(np.int32))
            continue
        w = want.float().numpy()
        matrix = suffix in MATRICES and type != "f32"
        if not matrix:
            assert t.tensor_type == F32, name
            assert np.array_equal(t.data.reshape(torch_shape), w), name
        elif type == "f16" or w.shape[-1] % 32:  # q8_0 falls back to F16 on widths not a multiple of 32
            assert t.tensor_type == F16, name
            assert np.array_equal(t.data.reshape(torch_shape), w.astype(np.float16)), name
            seen.add("f16")
        else:
            assert t.tensor_type == Q8, name
            got = q8_0_decode(t.data, torch_shape)
            # codes round x / d (d = amax / 127: half a step at most), and the decoder's d is rounded
            # to f16 (at most 127 * d * 2^-11 more)
            step = np.abs(w.reshape(-1, 32)).max(axis=1, keepdims=True) / 127
            err = np.abs(got - w).reshape(-1, 32)
            assert (err <= (0.5 + 127 * 2.0**-11) * step * (1 + 1e-6)).all(), name
            assert err.max() > 0  # really quantised
            seen.add("q8_0")
    if type == "q8_0":
        assert seen == {"f16", "q8_0"}  # q_lora_rank 24 inputs fell back, the rest is Q8_0
    file_type = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[type]
    assert reader.fields["general.file_type"].contents() == file_type


def test_metadata_read_back(model, tmp_path):
    cfg = model.cfg
    reader, _ = read(export_gguf(model, tmp_path / "m.gguf"))
    fields = {k: (f.contents(), [t.name for t in f.types]) for k, f in reader.fields.items()}
    a = "deepseek4."
    want = {
        "general.architecture": ("deepseek4", ["STRING"]),
        "general.name": ("gguf-test", ["STRING"]),
        a + "vocab_size": (97, ["UINT32"]),
        a + "context_length": (cfg.max_seq_len, ["UINT32"]),
        a + "embedding_length": (64, ["UINT32"]),
        a + "embedding_length_out": (256, ["UINT32"]),
        a + "block_count": (5, ["UINT32"]),
        a + "attention.head_count": (4, ["UINT32"]),
        a + "attention.head_count_kv": (1, ["UINT32"]),
        a + "attention.key_length": (32, ["UINT32"]),
        a + "attention.value_length": (32, ["UINT32"]),
        a + "attention.q_lora_rank": (24, ["UINT32"]),
        a + "attention.sliding_window": (8, ["UINT32"]),
        a + "attention.output_group_count": (2, ["UINT32"]),
        a + "attention.output_lora_rank": (16, ["UINT32"]),
        a + "attention.compress_ratios": ([0, 4, 128, 4, 128], ["ARRAY", "INT32"]),
        a + "attention.compress_rope_freq_base": (160000.0, ["FLOAT32"]),
        a + "attention.indexer.head_count": (16, ["UINT32"]),
        a + "attention.indexer.key_length": (64, ["UINT32"]),
        a + "attention.indexer.top_k": (3, ["UINT32"]),
        a + "rope.dimension_count": (8, ["UINT32"]),
        a + "rope.freq_base": (10000.0, ["FLOAT32"]),
        a + "rope.scaling.type": ("yarn", ["STRING"]),
        a + "rope.scaling.factor": (4.0, ["FLOAT32"]),
        a + "rope.scaling.original_context_length": (32, ["UINT32"]),
        a + "rope.scaling.yarn_beta_fast": (32.0, ["FLOAT32"]),
        a + "rope.scaling.yarn_beta_slow": (1.0, ["FLOAT32"]),
        a + "expert_count": (6, ["UINT32"]),
        a + "expert_used_count": (2, ["UINT32"]),
        a + "expert_shared_count": (1, ["UINT32"]),
        a + "expert_feed_forward_length": (24, ["UINT32"]),
        a + "expert_weights_norm": (True, ["BOOL"]),
        a + "expert_gating_func": (4, ["UINT32"]),
        a + "swiglu_clamp_exp": ([2.0] * 5, ["ARRAY", "FLOAT32"]),
        a + "swiglu_clamp_shexp": ([2.0] * 5, ["ARRAY", "FLOAT32"]),
        a + "hyper_connection.count": (4, ["UINT32"]),
        a + "hyper_connection.sinkhorn_iterations": (20, ["UINT32"]),
        a + "hash_layer_count": (2, ["UINT32"]),
        "tokenizer.ggml.model": ("none", ["STRING"]),
    }
    for key, value in want.items():
        assert fields[key] == value, key
    assert fields[a + "expert_weights_scale"][0] == pytest.approx(1.7, rel=1e-7)
    assert fields[a + "attention.layer_norm_rms_epsilon"][0] == pytest.approx(1e-6, rel=1e-7)
    assert fields[a + "hyper_connection.epsilon"][0] == pytest.approx(1e-6, rel=1e-7)


def test_no_yarn_without_original_seq_len(tmp_path):
    m = random_model(llamacpp_config(original_seq_len=0), seed=1)
    reader, _ = read(export_gguf(m, tmp_path / "m.gguf"))
    assert not [k for k in reader.fields if ".rope.scaling." in k]


@pytest.mark.parametrize("layout", ["hf", "deepseek", "int8"])
def test_cli_exports_every_folder_kind(model, tmp_path, layout, capsys):
    """hf, the release's layout (FP8 / FP4 storage) and an int8-quantised folder: the GGUF holds the
    values trillion itself loads from the folder (dequantised)."""
    src = tmp_path / "src"
    if layout == "int8":
        from trillion.quant import quantize_model

        save_model(quantize_model(model, "int8", inplace=False), src)
    else:
        cfg = llamacpp_config(dim=128, moe_inter_dim=32) if layout == "deepseek" else model.cfg
        save_model(model if layout == "hf" else random_model(cfg, seed=2), src, layout=layout)
    out = tmp_path / "out.gguf"
    assert main(["export", str(src), str(out), "--to", "gguf"]) == 0
    assert "wrote" in capsys.readouterr().out
    loaded = load_model(src, quantize=False)
    _, tensors = read(out)
    for name, t in tensors.items():
        want = expected_tensor(loaded, name).float().numpy()
        assert np.array_equal(t.data.reshape(want.shape), want.astype(t.data.dtype)), name
    if layout == "int8":  # really the dequantised int8 weights, not the float model's
        w = tensors["blk.1.attn_q_b.weight"].data
        assert not np.array_equal(w, model.state_dict()["layers.1.attn.wq_b.weight"].numpy())


def test_cli_refuses_overwrite_and_writes_nothing_on_refusal(tmp_path, capsys):
    out = tmp_path / "x.gguf"
    out.write_bytes(b"mine")
    assert main(["export", "bench-94m", str(out), "--to", "gguf"]) == 1
    assert "exists" in capsys.readouterr().err and out.read_bytes() == b"mine"
    bad = tmp_path / "tiny.gguf"
    assert main(["export", "tiny", str(bad), "--to", "gguf"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "compress_ratios has [16]" in err and "index_head_dim = 16" in err
    assert list(tmp_path.iterdir()) == [out]
