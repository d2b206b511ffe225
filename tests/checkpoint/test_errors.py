"""Bad checkpoints fail loudly: a CheckpointError naming the file, the tensor and what was expected."""

import json
import shutil
import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from trillion.checkpoint import CheckpointError, load_model, save_model


def copy(folder, tmp_path, name="c"):
    return shutil.copytree(folder, tmp_path / name)


def rewrite(file, edit):
    """Rewrite a safetensors file through `edit(tensors) -> tensors` (on a copy: loaded models may map it)."""
    with safe_open(str(file), "pt") as f:
        tensors = {k: f.get_tensor(k).clone() for k in f.keys()}  # noqa: SIM118 (a safe_open handle, not a dict)
    save_file(edit(tensors), str(file), metadata={"format": "pt"})


def load_error(path) -> str:
    with pytest.raises(CheckpointError) as e:
        load_model(path)
    assert isinstance(e.value, ValueError)
    return str(e.value)


def test_missing_config(hf_folder, tmp_path):
    path = copy(hf_folder, tmp_path)
    (path / "config.json").unlink()
    msg = load_error(path)
    assert str(path) in msg and "config.json" in msg


def test_shard_missing_from_index(model, tmp_path):
    path = save_model(model, tmp_path / "s", max_shard_bytes=100_000)
    victim = path / "model-00002-of-" f"{len(list(path.glob('*.safetensors'))):05d}.safetensors"
    index = json.loads((path / "model.safetensors.index.json").read_text())["weight_map"]
    some_tensor = min(k for k, v in index.items() if v == victim.name)
    victim.unlink()
    msg = load_error(path)
    assert victim.name in msg and "model.safetensors.index.json" in msg and some_tensor in msg


def test_truncated_file(hf_folder, tmp_path):
    path = copy(hf_folder, tmp_path)
    file = path / "model.safetensors"
    data = file.read_bytes()
    file.write_bytes(data[:-1000])
    msg = load_error(path)
    assert "model.safetensors" in msg and "truncated" in msg and "cut off" in msg and "model." in msg


def test_corrupt_header(hf_folder, tmp_path):
    path = copy(hf_folder, tmp_path)
    file = path / "model.safetensors"
    data = bytearray(file.read_bytes())
    data[8:40] = b"\x00garbage, not a json header...."
    file.write_bytes(bytes(data))
    msg = load_error(path)
    assert "model.safetensors" in msg and "corrupt" in msg


def test_file_safetensors_rejects_is_named(hf_folder, tmp_path):
    """A header we parse but safetensors refuses (overlapping data): its error comes back naming the file."""
    path = copy(hf_folder, tmp_path)
    file = path / "model.safetensors"
    data = file.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    # Point one norm at another norm's bytes (same size): overlapping, never a valid file.
    a, b = "model.layers.0.attn_norm.weight", "model.layers.0.ffn_norm.weight"
    header[a]["data_offsets"] = header[b]["data_offsets"]
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    last_end = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
    body = data[8 + n :][:last_end]
    file.write_bytes(struct.pack("<Q", len(raw)) + raw + body)
    msg = load_error(path)
    assert "model.safetensors" in msg


def test_wrong_shape(hf_folder, tmp_path):
    path = copy(hf_folder, tmp_path)
    name = "model.layers.1.attn.wq_a.weight"
    rewrite(path / "model.safetensors", lambda t: {**t, name: torch.zeros(24, 63)})
    msg = load_error(path)
    assert "model.safetensors" in msg and name in msg and "[24, 63]" in msg and "[24, 64]" in msg


def test_int_where_float_expected(hf_folder, tmp_path):
    path = copy(hf_folder, tmp_path)
    name = "model.norm.weight"
    rewrite(path / "model.safetensors", lambda t: {**t, name: torch.ones(64, dtype=torch.int32)})
    msg = load_error(path)
    assert "model.safetensors" in msg and name in msg and "I32" in msg and "floating" in msg


def test_float_where_int_expected(hf_folder, tmp_path):
    path = copy(hf_folder, tmp_path)
    name = "model.layers.0.ffn.gate.tid2eid"
    rewrite(path / "model.safetensors", lambda t: {**t, name: t[name].float()})
    msg = load_error(path)
    assert "model.safetensors" in msg and name in msg and "integer" in msg


def test_hash_table_out_of_range(hf_folder, tmp_path):
    path = copy(hf_folder, tmp_path)
    name = "model.layers.1.ffn.gate.tid2eid"
    rewrite(path / "model.safetensors", lambda t: {**t, name: t[name] + 6})
    msg = load_error(path)
    assert "model.safetensors" in msg and name in msg and "[0, 5]" in msg


def test_fp8_weight_without_scale(official_folder, tmp_path):
    path = copy(official_folder, tmp_path)
    index = json.loads((path / "model.safetensors.index.json").read_text())
    scale = "layers.0.attn.wq_a.scale"
    shard = index["weight_map"].pop(scale)
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    rewrite(path / shard, lambda t: {k: v for k, v in t.items() if k != scale})
    msg = load_error(path)
    assert shard in msg and "layers.0.attn.wq_a.weight" in msg and scale in msg


def test_missing_tensors_listed(hf_folder, tmp_path):
    path = copy(hf_folder, tmp_path)
    gone = [f"model.layers.2.ffn.experts.{e}.w{i}.weight" for e in range(4) for i in (1, 2, 3)]
    rewrite(path / "model.safetensors", lambda t: {k: v for k, v in t.items() if k not in gone})
    msg = load_error(path)
    assert "12 missing tensors" in msg and "and 2 more" in msg and "model.safetensors" in msg
    assert sum(g in msg for g in gone) == 10


def test_unexpected_tensors_listed(hf_folder, tmp_path):
    path = copy(hf_folder, tmp_path)
    extra = {"model.layers.0.attn.bogus.weight": torch.zeros(3), "something.else": torch.zeros(2)}
    rewrite(path / "model.safetensors", lambda t: {**t, **extra})
    msg = load_error(path)
    assert "2 unexpected tensors" in msg and "model.safetensors" in msg
    assert all(name in msg for name in extra)


def test_neither_folder_nor_flavor(tmp_path):
    with pytest.raises(CheckpointError, match="neither a checkpoint folder nor a flavor"):
        load_model(tmp_path / "nothing-here")


def test_folder_without_weights(hf_folder, tmp_path):
    path = copy(hf_folder, tmp_path)
    (path / "model.safetensors").rename(path / "weights.safetensors")
    msg = load_error(path)
    assert "model.safetensors" in msg and "weights.safetensors" in msg
