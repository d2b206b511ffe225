"""The "hf" layout against transformers: ours -> transformers, transformers -> ours, ours -> ours."""

import json

import pytest
import torch
from helpers import SAME_WEIGHTS_LOGITS, assert_same_weights
from transformers import AutoModelForCausalLM

from trillion.checkpoint import load_model, save_model

TOL = 1e-4


@torch.no_grad()
def test_transformers_loads_our_save(hf_folder, model, tokens, logits):
    config = json.loads((hf_folder / "config.json").read_text())
    assert config["model_type"] == "deepseek_v4" and config["dtype"] == "float32"
    ref = AutoModelForCausalLM.from_pretrained(str(hf_folder)).eval()
    assert ref.dtype == torch.float32
    theirs = ref(tokens).logits.float()
    assert theirs.shape == logits.shape == (2, 45, 97)
    assert (theirs - logits).abs().max().item() <= TOL


@torch.no_grad()
def test_load_our_save_gives_the_same_weights(hf_folder, model, tokens, logits):
    loaded = load_model(hf_folder)
    assert not loaded.training
    assert_same_weights(loaded, model)
    torch.testing.assert_close(loaded(tokens), logits, **SAME_WEIGHTS_LOGITS)
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])


@torch.no_grad()
def test_load_what_transformers_wrote(hf_folder, tokens, tmp_path):
    ref = AutoModelForCausalLM.from_pretrained(str(hf_folder)).eval()
    ref.save_pretrained(str(tmp_path / "theirs"))  # transformers drops the MTP block
    with pytest.warns(UserWarning, match="MTP"):
        ours = load_model(tmp_path / "theirs")
    assert ours.cfg.n_mtp_layers == 0
    assert (ours(tokens) - ref(tokens).logits.float()).abs().max().item() <= TOL


@torch.no_grad()
def test_dtype_on_load_and_save(model, tokens, logits, tmp_path):
    bf16 = load_model(save_model(model, tmp_path / "bf16", dtype=torch.bfloat16), dtype="bfloat16")
    assert bf16.layers[0].attn.wq_a.weight.dtype == torch.bfloat16
    assert bf16.layers[0].attn_norm.weight.dtype == torch.float32  # norms stay float32
    assert bf16.head.weight.dtype == torch.float32
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"
    # Loading bf16 storage in float32 gives exactly the bf16-rounded weights.
    up = load_model(tmp_path / "bf16")
    assert up.layers[0].attn.wq_a.weight.dtype == torch.float32
    assert torch.equal(up.layers[0].attn.wq_a.weight, model.layers[0].attn.wq_a.weight.bfloat16().float())


def test_flavor_and_meta():
    tiny = load_model("tiny", seed=1)
    again = load_model("tiny", seed=1)
    assert torch.equal(tiny.embed.weight, again.embed.weight)
    assert not torch.equal(tiny.embed.weight, load_model("tiny", seed=2).embed.weight)
    meta = load_model("bench-1b", device="meta", dtype="bfloat16")
    assert meta.embed.weight.is_meta and meta.layers[0].attn.wq_a.weight.dtype == torch.bfloat16
    assert load_model("tiny", fake_quant=True).cfg.fake_quant is True


def test_folder_on_meta_checks_names_but_reads_nothing(hf_folder, tmp_path):
    meta = load_model(hf_folder, device="meta")
    assert all(p.is_meta for p in meta.parameters()) and meta.cfg.n_layers == 5
