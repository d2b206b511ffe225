"""Quantised checkpoints: save -> load keeps the modules quantised and the logits identical; the
release layout for v4-release; load_model's `quantize=`; bad checkpoints fail by name, atomically."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from trillion.checkpoint import CheckpointError, load_model, save_model
from trillion.quant import (
    FP8BlockLinear,
    Int4Linear,
    Int8Linear,
    MXFP4Linear,
    quantize_model,
    quantized_modules,
)

from .conftest import one_thread

SCHEMES_SAVED = ["int8", "int4-g32", "v4-release", "hif8", "mxfp8"]
MODULE_TYPES = {"int8": Int8Linear, "int4-g32": Int4Linear, "v4-release": FP8BlockLinear}


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    """{scheme: (folder, logits of the in-memory quantised model)}"""
    out = {}
    tokens = torch.randint(0, 97, (1, 29), generator=torch.Generator().manual_seed(1))
    root = tmp_path_factory.mktemp("quant")
    with one_thread(), torch.no_grad():
        for name in SCHEMES_SAVED:
            q = quantize_model(model, name, inplace=False)
            out[name] = (save_model(q, root / name), q(tokens), tokens)
    return out


@pytest.mark.parametrize("name", SCHEMES_SAVED)
@torch.no_grad()
def test_save_load_keeps_the_model_quantised(name, saved):
    folder, want, tokens = saved[name]
    config = json.loads((folder / "config.json").read_text())
    assert config["quantization_config"]["scheme"] == name
    model = load_model(folder)
    mods = quantized_modules(model)
    # 6 blocks (5 + MTP) x (5 attention + 3 shared + 6 x 3 routed) + 2 indexer wq_b + MTP e_proj, h_proj
    assert len(mods) == 160 and model.quant_scheme.name == name
    if name in MODULE_TYPES:
        assert type(mods["layers.1.attn.wq_a"]) is MODULE_TYPES[name]
    assert torch.equal(model(tokens), want)


@torch.no_grad()
def test_buffers_stay_integer_in_memory(saved):
    model = load_model(saved["int8"][0])
    m = model.layers[1].attn.wq_b
    assert m.qweight.dtype == torch.int8 and m.qscale.dtype == torch.bfloat16
    assert not any(p.dtype == torch.float32 and p.dim() == 2 and p.shape[0] == 128 for p in m.parameters())
    m4 = load_model(saved["int4-g32"][0]).layers[2].ffn.experts[0].w1
    assert m4.packed.dtype == torch.uint8 and m4.packed.shape == (128, 64)


def test_v4_release_is_written_in_the_official_layout(saved):
    folder = saved["v4-release"][0]
    config = json.loads((folder / "config.json").read_text())
    qc = config["quantization_config"]
    assert (
        qc["quant_method"] == "fp8" and qc["weight_block_size"] == [128, 128] and qc["scale_fmt"] == "ue8m0"
    )
    assert config["expert_dtype"] == "fp4"
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        fp8, fp8_scale = f.get_slice("layers.1.attn.wq_b.weight"), f.get_slice("layers.1.attn.wq_b.scale")
        fp4, fp4_scale = (
            f.get_slice("layers.1.ffn.experts.0.w2.weight"),
            f.get_slice("layers.1.ffn.experts.0.w2.scale"),
        )
        assert (fp8.get_dtype(), fp8.get_shape(), fp8_scale.get_dtype(), fp8_scale.get_shape()) == (
            "F8_E4M3",
            [256, 128],
            "F8_E8M0",
            [2, 1],
        )
        assert (fp4.get_dtype(), fp4.get_shape(), fp4_scale.get_dtype(), fp4_scale.get_shape()) == (
            "I8",
            [128, 64],
            "F8_E8M0",
            [128, 4],
        )
        assert f.get_slice("head.weight").get_dtype() == "F32"
    # ... so the release reader (FP8 / FP4 dequantised to float) reads it too
    float_model = load_model(folder, quantize=False)
    assert not quantized_modules(float_model)


@torch.no_grad()
def test_quantize_option_of_load_model(model, saved, tmp_path):
    float_folder = save_model(model, tmp_path / "f32")
    q = load_model(float_folder, quantize="int8")
    assert type(q.layers[0].attn.wo_b) is Int8Linear
    assert type(load_model("tiny", quantize="fp8-block").layers[0].attn.wq_a) is FP8BlockLinear
    # a quantised checkpoint, asked for another scheme: dequantised, then quantised again
    other = load_model(saved["int8"][0], quantize="v4-release")
    assert type(other.layers[1].ffn.experts[0].w1) is MXFP4Linear
    # the release's own layout (no scheme in its config) loads as float unless asked for v4-release
    release = save_model(model, tmp_path / "release", layout="deepseek")
    assert type(load_model(release).layers[0].attn.wq_a) is nn.Linear
    kept = load_model(release, quantize="v4-release")
    stored = load_file(str(release / "model.safetensors"))
    assert torch.equal(kept.layers[0].attn.wq_a.codes, stored["layers.0.attn.wq_a.weight"].view(torch.uint8))
    assert torch.equal(
        kept.layers[0].ffn.experts[1].w3.codes, stored["layers.0.ffn.experts.1.w3.weight"].view(torch.uint8)
    )
    meta = load_model(saved["int4-g32"][0], device="meta")
    assert type(meta.layers[0].attn.wq_a) is Int4Linear and meta.layers[0].attn.wq_a.packed.is_meta


def _rewrite(folder, change):
    tensors = load_file(str(folder / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(folder / "model.safetensors"))


def test_scales_that_do_not_match_their_weights(saved, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(saved["v4-release"][0], bad)

    def change(t):
        t["layers.1.attn.wq_b.scale"] = t["layers.1.attn.wq_b.scale"][:1]
        t["layers.2.ffn.experts.3.w1.scale"] = t["layers.2.ffn.experts.3.w1.scale"].float()
        del t["layers.0.attn.wkv.scale"]

    _rewrite(bad, change)
    with pytest.raises(CheckpointError) as e:
        load_model(bad)
    msg = str(e.value)
    assert (
        "tensor 'layers.1.attn.wq_b.scale': shape [1, 1], expected [2, 1] "
        "for the fp8 scales of layers.1.attn.wq_b.weight" in msg
    )
    assert "'layers.2.ffn.experts.3.w1.scale': dtype F32, expected float8_e8m0fnu for the mxfp4 scales" in msg
    assert "missing tensors" in msg and "layers.0.attn.wkv.scale" in msg

    codes = tmp_path / "codes"
    shutil.copytree(saved["int8"][0], codes)
    _rewrite(codes, lambda t: t.update({"layers.0.attn.wq_a.weight": t["layers.0.attn.wq_a.weight"].float()}))
    with pytest.raises(
        CheckpointError, match=r"'layers.0.attn.wq_a.weight': dtype F32, expected int8 for the int8 codes"
    ):
        load_model(codes)


def test_a_quantised_model_saves_only_in_its_own_layout(model, tmp_path):
    q = quantize_model(model, "int8", inplace=False)
    with pytest.raises(ValueError, match="deepseek layout"):
        save_model(q, tmp_path / "x", layout="hf")
    assert not (tmp_path / "x").exists()
    sharded = save_model(q, tmp_path / "sharded", max_shard_bytes=200_000)
    assert (
        len(list(sharded.glob("*.safetensors"))) > 1 and (sharded / "model.safetensors.index.json").exists()
    )
    assert type(load_model(sharded).layers[2].attn.wq_a) is Int8Linear


@pytest.mark.parametrize("scheme", ["int8", "v4-release"])
@torch.no_grad()
def test_float_tensors_are_stored_in_the_compute_dtype(model, scheme, tmp_path):
    """A quantised copy of a bf16 model stores the tensors it does not quantise in bf16 (float32 only
    for what DeepSeek keeps in float32), not float32, and loads to the same logits."""
    from trillion.model.dtypes import keeps_fp32

    src = load_model(save_model(model, tmp_path / "src", dtype=torch.bfloat16), dtype=torch.float32)
    q = quantize_model(src, scheme)  # in float32 memory, as `trillion quantize` holds it
    folder = save_model(q, tmp_path / "q", dtype=torch.bfloat16)
    owned = {f"{n}.{leaf}" for n, m in quantized_modules(q).items() for leaf in m.stored_spec()}
    want, size = {}, 0
    for name, t in q.state_dict().items():
        if name in owned or not t.is_floating_point():
            want[name] = t.dtype
        else:
            want[name] = torch.float32 if keeps_fp32(name) else torch.bfloat16
        size += t.numel() * want[name].itemsize
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        got = {k: f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118 (a safe_open handle)
    names = {torch.bfloat16: "BF16", torch.float32: "F32", torch.int8: "I8", torch.uint8: "U8",
             torch.int64: "I64", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e8m0fnu: "F8_E8M0"}
    assert got == {k: names[v] for k, v in want.items()}
    assert "BF16" in got.values() and got["embed.weight"] == "BF16" and got["head.weight"] == "F32"
    assert sum(f.stat().st_size for f in folder.glob("*.safetensors")) < size + 100_000  # + the header
    assert json.loads((folder / "config.json").read_text())["dtype"] == "bfloat16"
    tokens = torch.randint(0, 97, (1, 21), generator=torch.Generator().manual_seed(2))
    assert torch.equal(load_model(folder)(tokens), q(tokens))


@torch.no_grad()
def test_a_checkpoint_quantised_with_skip_loads(model, tmp_path):
    """Modules left in float by `skip` are recorded (modules_to_not_convert) and load in float."""
    q = quantize_model(model, "int8", skip=[r"^mtp\.", r"layers\.1\.attn\.wq_a$"], inplace=False)
    folder = save_model(q, tmp_path / "skip")
    kept = json.loads((folder / "config.json").read_text())["quantization_config"]["modules_to_not_convert"]
    assert "layers.1.attn.wq_a" in kept and "mtp.0.attn.wq_a" in kept and "layers.0.attn.wq_a" not in kept
    loaded = load_model(folder)
    assert type(loaded.layers[1].attn.wq_a) is nn.Linear and type(loaded.layers[0].attn.wq_a) is Int8Linear
    assert set(quantized_modules(loaded)) == set(quantized_modules(q))
    tokens = torch.randint(0, 97, (1, 19), generator=torch.Generator().manual_seed(4))
    assert torch.equal(loaded(tokens), q(tokens))
