"""quantize_model: which modules are swapped, logits against float32 and against the reference path,
the engine's decode path, and the errors for bad input."""

import contextlib

import pytest
import torch
from helpers import random_model
from torch import nn

from trillion.engine import LLM, SamplingParams
from trillion.quant import (
    SCHEMES,
    QuantLinear,
    dequantize_model,
    get_scheme,
    logit_error,
    model_nbytes,
    quantize_model,
    quantized_modules,
    set_kernel_dtype,
)

from .conftest import quant_config

SCHEME_NAMES = [s for s in SCHEMES if s != "int4"]  # int4's groups of 128 do not fit 64-wide weights
# KL(float32 || quantised) per token on the smoothly initialised test model; bf16 alone gives ~2e-4.
MAX_KL = {
    "int8": 3e-4,
    "fp8-block": 2e-3,
    "mxfp8": 2e-3,
    "hif8": 2e-3,
    "v4-release": 3e-3,
    "mxfp4": 2e-2,
    "int4-g32": 2e-2,
}


@contextlib.contextmanager
def reference_path(model):
    """Run every quantised module through its plain reference (dequantise + F.linear)."""
    mods = quantized_modules(model).values()
    for m in mods:
        m.forward = m.reference_forward
    try:
        yield model
    finally:
        for m in mods:
            del m.forward


@pytest.mark.parametrize("name", SCHEME_NAMES)
@torch.no_grad()
def test_scheme_swaps_the_right_modules_and_stays_close(name, model, tokens, logits):
    q = quantize_model(model, name, inplace=False)
    scheme = SCHEMES[name]
    mods = quantized_modules(q)
    assert mods["layers.1.attn.wo_a"].fmt == scheme.dense and mods["mtp.0.e_proj"].fmt == scheme.dense
    assert mods["layers.1.attn.indexer.wq_b"].fmt == scheme.dense
    assert mods["layers.2.ffn.experts.5.w2"].fmt == scheme.experts
    assert mods["layers.2.ffn.shared_experts.w1"].fmt == scheme.dense
    # left as they are, as in DeepSeek's release
    for kept in ("head", "layers.1.attn.compressor.wkv", "layers.1.attn.indexer.weights_proj"):
        assert type(q.get_submodule(kept)) is nn.Linear
    assert isinstance(q.layers[0].ffn.gate.weight, nn.Parameter)
    assert q.quant_scheme.name == name and type(model.head) is nn.Linear and not quantized_modules(model)

    # the fast paths against dequantise + F.linear, with the integer kernels in float32 (exact): this
    # chaotic random model amplifies the bf16 rounding of activations (compared per module in test_linear)
    out = set_kernel_dtype(q, torch.float32)(tokens)
    with reference_path(q):
        ref = q(tokens)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-4)
    assert model_nbytes(q) < 0.5 * model_nbytes(model)


@torch.no_grad()
def test_logit_error_is_small_and_ordered_by_precision(smooth_model, tokens):
    ref = smooth_model(tokens)
    kl = {}
    for name in SCHEME_NAMES:
        err = logit_error(ref, quantize_model(smooth_model, name, inplace=False)(tokens))
        kl[name] = err["kl"]
        assert 0 < err["kl"] < MAX_KL[name], (name, err)
        assert err["top1"] > 0.4, (name, err)
    assert kl["int8"] < kl["fp8-block"] < kl["v4-release"] < kl["mxfp4"]


@torch.no_grad()
def test_inplace_false_shares_the_unquantised_tensors(model):
    q = quantize_model(model, "int8", inplace=False)
    assert q.embed.weight.data_ptr() == model.embed.weight.data_ptr()
    assert type(model.layers[0].attn.wq_a) is nn.Linear and isinstance(q.layers[0].attn.wq_a, QuantLinear)


@torch.no_grad()
def test_engine_decode_matches_the_full_forward(model):
    """Greedy decoding through the engine (decode fast path, grouped wo_a) = argmax of the full forward."""
    q = quantize_model(model, "int4-g32", inplace=False)
    prompt = list(range(3, 23))
    out = LLM(q, max_seqs=2, max_model_len=64).generate(
        [prompt], SamplingParams(temperature=0, max_new_tokens=6, ignore_eos=True)
    )[0]
    ids = list(prompt)
    for _ in range(6):
        ids.append(int(q(torch.tensor([ids]))[0, -1].argmax()))
    assert out.token_ids == ids[len(prompt) :]


@torch.no_grad()
def test_head_skip_act_quant_and_dequantize(model, tokens):
    scheme = get_scheme("fp8-block", head="int8", act_quant=True)
    q = quantize_model(model, scheme, skip=[r"^mtp\.", r"layers\.0\.attn\.wq_a$"], inplace=False)
    mods = quantized_modules(q)
    assert (
        mods["head"].fmt == "int8"
        and "layers.0.attn.wq_a" not in mods
        and not any(n.startswith("mtp.") for n in mods)
    )
    assert all(m.act_quant for m in mods.values())
    rounded = set_kernel_dtype(q, torch.float32)(tokens)
    for m in mods.values():
        m.act_quant = False
    out = q(tokens)
    assert (rounded - out).abs().max() > 1e-3  # act_quant changes the numerics
    back = dequantize_model(q)
    assert not quantized_modules(back) and not hasattr(back, "quant_scheme")
    assert type(back.layers[1].attn.wo_a) is nn.Linear and type(back.head) is nn.Linear
    torch.testing.assert_close(back(tokens), out, rtol=0, atol=1e-4)  # the same weights


def test_nan_weight_is_refused_by_name_and_nothing_changes():
    m = random_model(quant_config(), seed=1)
    m.layers[2].ffn.experts[3].w1.weight.data[5, 7] = float("nan")
    m.layers[1].attn.wq_b.weight.data[0, 0] = float("inf")
    with pytest.raises(ValueError) as e:
        quantize_model(m, "int8")
    msg = str(e.value)
    assert "layers.2.ffn.experts.3.w1.weight" in msg and "1 NaN" in msg and "layers.1.attn.wq_b.weight" in msg
    assert not quantized_modules(m) and not hasattr(m, "quant_scheme")


def test_shapes_a_scheme_cannot_take():
    m = random_model(quant_config(moe_inter_dim=48), seed=0)  # 48 is no multiple of 32 (MX) or 128 (int4)
    with pytest.raises(
        ValueError, match=r"layers\.0\.ffn\.experts\.0\.w2\.weight \[128, 48\].*multiple of 32"
    ):
        quantize_model(m, "v4-release")
    with pytest.raises(ValueError, match=r"group size 128, got 48"):
        quantize_model(m, "int4")
    with pytest.raises(ValueError, match=r"multiple of 128, got 48"):
        quantize_model(m, get_scheme("int8", act_quant=True))
    assert not quantized_modules(m)


def test_unknown_scheme_and_double_quantisation(model):
    with pytest.raises(ValueError, match="unknown quantisation scheme 'int3'.*int8"):
        quantize_model(model, "int3")
    with pytest.raises(ValueError, match="format 'fp6'"):
        get_scheme("int8", dense="fp6")
    q = quantize_model(model, "int8", inplace=False)
    with pytest.raises(ValueError, match="already quantised"):
        quantize_model(q, "int4")
