"""llama.cpp runs the exported file: its logits match trillion's, its tokenizer matches HF's.

Slow, and skipped unless llama-cpp-python (with the deepseek4 architecture, 0.3.36) is installed:
pip install 'trillion[llamacpp]'. llama.cpp runs with an f32 KV cache (its default f16 cache is
enough to flip routing decisions on random weights), and index_topk is larger than the number of
compressed entries, so the lightning indexer keeps every visible entry in both engines and near-ties
in its scores cannot pick different entries.
"""

import contextlib

import numpy as np
import pytest
import torch
from helpers import mixed_config, random_model

pytestmark = pytest.mark.slow

gguf = pytest.importorskip("gguf")
llama_cpp = pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed (pip install 'trillion[llamacpp]')"
)

from gguf_export.test_export import OURS

from trillion.assets import demo_path
from trillion.gguf import export_gguf
from trillion.tokenizer import Tokenizer

EXPERTS = {"ffn_gate_exps.weight": "w1", "ffn_down_exps.weight": "w2", "ffn_up_exps.weight": "w3"}
GGML_TYPE_F32 = 0
T = 300  # tokens: 37 windows of 8, 75 CSA blocks of 4, two HCA blocks of 128
# Relative to the largest |logit|: both engines compute in float32, in different orders.
TOL = 1e-3


def config(**overrides):
    kw = {
        "vocab_size": 512,
        "compress_ratios": (0, 4, 128, 4, 128, 0),
        "index_head_dim": 64,
        "index_topk": 128,  # > T / 4 compressed entries: the indexer keeps all of them
        "max_seq_len": 4096,
        "name": "llamacpp-test",
    }
    return mixed_config(**{**kw, **overrides})


@contextlib.contextmanager
def without_extra_buffers():
    """Load with llama.cpp's extra weight buffers off (llama-cpp-python has no argument for it).

    On x86 the only extra buffer for Q8_0 is the AMX one, and on AMX CPUs (Sapphire Rapids, where
    this was written) llama.cpp 0.3.36 crashes on a deepseek4 Q8_0 graph with it: GGML_ASSERT
    (*cur_backend_id != -1) for the 3-D attn_output_a product, segfaults in others. Without it Q8_0
    runs on the plain CPU kernels, as on CPUs without AMX."""
    module = llama_cpp.llama.llama_cpp
    default = module.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = False
        return p

    module.llama_model_default_params = params
    try:
        yield
    finally:
        module.llama_model_default_params = default


def llama(path, n_ctx=512, **kw):
    return llama_cpp.Llama(
        model_path=str(path),
        n_ctx=n_ctx,
        n_batch=512,
        n_ubatch=512,
        n_threads=2,
        type_k=GGML_TYPE_F32,
        type_v=GGML_TYPE_F32,
        logits_all=True,
        verbose=False,
        **kw,
    )


def compare(model, path, tokens, chunks):
    """llama.cpp's logits for `tokens` fed in `chunks` (sizes) against trillion's full forward."""
    with torch.no_grad():
        want = model(torch.tensor([tokens]))[0].numpy()
    with without_extra_buffers():
        llm = llama(path)
    start = 0
    for n in chunks:
        llm.eval(tokens[start : start + n])
        start += n
    got = np.array(llm.scores[: len(tokens)])
    err = np.abs(got - want).max() / np.abs(want).max()
    return err, (got.argmax(-1) == want.argmax(-1)).mean()


@pytest.mark.parametrize("yarn", [True, False])
def test_prefill_logits_match(tmp_path, yarn):
    cfg = config() if yarn else config(original_seq_len=0)
    model = random_model(cfg, seed=11)
    path = export_gguf(model, tmp_path / "m.gguf")
    tokens = torch.randint(0, cfg.vocab_size, (T,), generator=torch.Generator().manual_seed(3)).tolist()
    err, top1 = compare(model, path, tokens, [T])
    assert err < TOL and top1 == 1.0, (err, top1)


def test_incremental_decode_logits_match(tmp_path):
    """A prompt, then one token at a time across CSA and HCA block boundaries (llama.cpp's
    compressor states), then a chunk: every position still matches the full forward."""
    cfg = config()
    model = random_model(cfg, seed=12)
    path = export_gguf(model, tmp_path / "m.gguf")
    tokens = torch.randint(0, cfg.vocab_size, (T,), generator=torch.Generator().manual_seed(4)).tolist()
    err, top1 = compare(model, path, tokens, [120] + [1] * 20 + [T - 140])
    assert err < TOL and top1 == 1.0, (err, top1)


def expected_name(gguf_name):
    if not gguf_name.startswith("blk."):
        return OURS[gguf_name]
    _, layer, suffix = gguf_name.split(".", 2)
    return f"layers.{layer}.{OURS[suffix]}"


@torch.no_grad()
def with_file_weights(model, path):
    """`model` with every F16 / Q8_0 tensor of the file written back into it, decoded."""
    sd = model.state_dict()
    for t in gguf.GGUFReader(path).tensors:
        if t.tensor_type.name not in ("F16", "Q8_0"):
            continue
        w = torch.from_numpy(gguf.quants.dequantize(t.data, t.tensor_type).copy())
        if t.name.endswith("_exps.weight"):
            layer, proj = t.name.split(".")[1], EXPERTS[t.name.split(".", 2)[2]]
            for e in range(model.cfg.n_routed_experts):
                sd[f"layers.{layer}.ffn.experts.{e}.{proj}.weight"].copy_(w[e])
        else:
            name = expected_name(t.name)
            sd[name].copy_(w.reshape(sd[name].shape))
    return model


@pytest.mark.parametrize(
    "type, max_err, median_err, top1", [("f16", 1e-2, 5e-3, 0.98), ("q8_0", 1.0, 0.1, 0.8)]
)
def test_f16_and_q8_0_files(tmp_path, type, max_err, median_err, top1):
    """The f16 and q8_0 files run in llama.cpp close to trillion with the weights the file stores.

    Not to float32 precision: llama.cpp rounds the activations of F16 products to f16 and of Q8_0
    products to 8 bits (blocks of 32), which on random weights flips some routing decisions in the
    q8_0 case. A misread layout would agree on ~1/vocab of the positions."""
    cfg = config(dim=128, moe_inter_dim=64, q_lora_rank=64, o_lora_rank=32)
    model = random_model(cfg, seed=13)
    path = export_gguf(model, tmp_path / f"{type}.gguf", type=type)
    tokens = torch.randint(0, cfg.vocab_size, (T,), generator=torch.Generator().manual_seed(5)).tolist()
    with torch.no_grad():
        want = with_file_weights(model, path)(torch.tensor([tokens]))[0].numpy()
    with without_extra_buffers():
        llm = llama(path)
    llm.eval(tokens)
    got = np.array(llm.scores[:T])
    err = np.abs(got - want).max(-1) / np.abs(want).max(-1)  # per position
    agree = (got.argmax(-1) == want.argmax(-1)).mean()
    assert err.max() < max_err and np.median(err) < median_err and agree >= top1, (
        err.max(),
        np.median(err),
        agree,
    )


TEXTS = [
    "Hello world! Numbers 12345 and 3.14159, symbols #@$%^&*().",
    "  leading spaces,\ttabs\nand new lines\n\n\nend",
    "Unicode: café, naïve, 日本語のテキスト, emoji 🙂 and Ω≈ç√.",
    "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜></think>Hello<｜end▁of▁sentence｜>",
]


def test_tokenizer_matches_hf(tmp_path):
    tok_path = demo_path() / "tokenizer.json"
    hf = Tokenizer.from_file(tok_path)
    model = random_model(config(vocab_size=hf.vocab_size), seed=0)
    path = export_gguf(model, tmp_path / "t.gguf", tokenizer=tok_path)
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, vocab_only=True, verbose=False)
    for text in TEXTS:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        assert ids == hf.encode(text), text
        assert llm.detokenize(ids, special=True).decode("utf-8") == text
