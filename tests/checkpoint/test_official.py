"""The official release layout: FP8 / FP4 weights with UE8M0 scales, bf16, fp32 and int64 tensors.

The expected model is built independently of the loader: every quantised weight replaced by
dequantize(quantize(weight)) through trillion.formats, every bf16 tensor rounded to bf16.
"""

import json

import pytest
import torch
from helpers import mixed_config, random_model
from safetensors import safe_open

from trillion.checkpoint import CheckpointError, load_model, save_model
from trillion.checkpoint.index import checkpoint_tensors
from trillion.checkpoint.layouts import official_storage
from trillion.formats import (
    dequantize_fp4_blocks,
    dequantize_fp8_blocks,
    quantize_fp4_blocks,
    quantize_fp8_blocks,
)


@torch.no_grad()
def expected_state(model) -> dict[str, torch.Tensor]:
    out = {}
    for name, w in model.state_dict().items():
        kind = official_storage(name)
        if kind == "fp8":
            w = dequantize_fp8_blocks(*quantize_fp8_blocks(w, block=(128, 128)), torch.float32)
        elif kind == "fp4":
            w = dequantize_fp4_blocks(*quantize_fp4_blocks(w, block=32), torch.float32)
        elif kind == "bf16":
            w = w.bfloat16().float()
        out[name] = w
    return out


@pytest.fixture(scope="module")
def want(official_model):
    return expected_state(official_model)


@torch.no_grad()
def test_load_equals_independent_dequantization(official_model, official_folder, want, tokens):
    expected = random_model(official_model.cfg, seed=99)
    expected.load_state_dict(want)
    loaded = load_model(official_folder)
    got = loaded.state_dict()
    kinds = {official_storage(n) for n in got}
    assert kinds == {"fp8", "fp4", "bf16", "fp32", "int64"}
    for name, w in want.items():
        assert got[name].dtype == w.dtype and torch.equal(got[name], w), name
    diff = (loaded(tokens) - expected(tokens)).abs().max().item()
    assert diff <= 1e-5
    # Quantisation did change the model (the test is not vacuous).
    assert (loaded(tokens) - official_model(tokens)).abs().max().item() > 1e-3


def test_files_have_the_release_dtypes(official_folder):
    config = json.loads((official_folder / "config.json").read_text())
    assert config["quantization_config"] == {
        "quant_method": "fp8",
        "fmt": "e4m3",
        "scale_fmt": "ue8m0",
        "weight_block_size": [128, 128],
        "activation_scheme": "dynamic",
    }
    assert config["expert_dtype"] == "fp4"
    assert (official_folder / "model.safetensors.index.json").exists()  # small shards -> several files
    infos = checkpoint_tensors(official_folder)
    dtypes = {}
    for info in infos.values():
        with safe_open(str(info.file), "pt") as f:
            dtypes[info.name] = f.get_tensor(info.name).dtype
    n = 0
    for name, dtype in dtypes.items():
        if name.endswith(".scale"):
            continue
        kind = official_storage(name)
        want = {
            "fp8": torch.float8_e4m3fn,
            "fp4": torch.int8,
            "bf16": torch.bfloat16,
            "fp32": torch.float32,
            "int64": torch.int64,
        }[kind]
        assert dtype == want, name
        if kind in ("fp8", "fp4"):
            scale = name[: -len("weight")] + "scale"
            assert dtypes[scale] == torch.float8_e8m0fnu, scale
            n += 1
    assert dtypes["layers.1.ffn.experts.0.w1.weight"] == torch.int8
    assert infos["layers.1.ffn.experts.0.w1.weight"].shape == (32, 64)  # [N, K/2]: two codes a byte
    assert infos["layers.1.ffn.experts.0.w1.scale"].shape == (32, 4)  # one per 32 along K
    assert infos["layers.1.attn.wq_b.scale"].shape == (1, 1)  # [ceil(128/128), ceil(24/128)]
    assert dtypes["layers.0.ffn.gate.tid2eid"] == torch.int64
    assert n > 100


def test_loads_in_bf16(official_folder, want):
    bf16 = load_model(official_folder, dtype=torch.bfloat16)
    w = bf16.layers[2].attn.wq_a.weight
    assert w.dtype == torch.bfloat16 and torch.equal(w.float(), want["layers.2.attn.wq_a.weight"])


def test_fp4_needs_width_multiple_of_32(tmp_path):
    model = random_model(mixed_config(dim=128, moe_inter_dim=24))  # w2 takes 24 inputs
    with pytest.raises(CheckpointError, match=r"w2\.weight.*multiple of 32"):
        save_model(model, tmp_path / "bad", layout="deepseek")
    assert not (tmp_path / "bad").exists()
    assert list(tmp_path.iterdir()) == []  # no temporary folder left behind


def test_scale_in_another_shard(official_folder, official_model, want, tmp_path):
    """The index may place a weight's scale in a different shard than the weight."""
    import json
    import shutil

    from safetensors.torch import save_file

    path = shutil.copytree(official_folder, tmp_path / "moved")
    index_file = path / "model.safetensors.index.json"
    index = json.loads(index_file.read_text())
    name = "layers.2.attn.wq_a.scale"
    src = index["weight_map"][name]
    dst = next(f for f in sorted(set(index["weight_map"].values())) if f != src)
    shards = {}
    for f in (src, dst):
        with safe_open(str(path / f), "pt") as h:
            shards[f] = {k: h.get_tensor(k).clone() for k in h.keys()}  # noqa: SIM118 (a safe_open handle, not a dict)
    shards[dst][name] = shards[src].pop(name)
    for f, tensors in shards.items():
        save_file(tensors, str(path / f), metadata={"format": "pt"})
    index["weight_map"][name] = dst
    index_file.write_text(json.dumps(index))
    loaded = load_model(path)
    assert torch.equal(loaded.layers[2].attn.wq_a.weight, want["layers.2.attn.wq_a.weight"])
