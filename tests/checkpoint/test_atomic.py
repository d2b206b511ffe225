"""An interrupted save leaves the previous checkpoint loadable and byte-for-byte unchanged."""

import importlib

import pytest
import torch
from helpers import mixed_config, random_model

from trillion.checkpoint import load_model, save_model

save_module = importlib.import_module("trillion.checkpoint.save")


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@torch.no_grad()
def test_interrupted_save_keeps_previous(model, tokens, logits, tmp_path, monkeypatch):
    path = save_model(model, tmp_path / "ckpt", max_shard_bytes=100_000)
    before = snapshot(path)
    other = random_model(mixed_config(), seed=5)

    real, calls = save_module._write_shard, []

    def dies_on_second_shard(file, tensors):
        calls.append(file)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        real(file, tensors)

    monkeypatch.setattr(save_module, "_write_shard", dies_on_second_shard)
    with pytest.raises(OSError, match="simulated"):
        save_model(other, path, max_shard_bytes=100_000)
    assert len(calls) == 2
    assert snapshot(path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # the temporary folder is gone
    assert torch.equal(load_model(path)(tokens), logits)

    monkeypatch.undo()
    save_model(other, path)  # a completed save replaces the folder (now single-file)
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "generation_config.json", "model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    assert torch.equal(load_model(path)(tokens), other(tokens))


def test_refuses_to_replace_a_file(model, tmp_path):
    target = tmp_path / "a-file"
    target.write_text("keep me")
    with pytest.raises(ValueError, match="not a folder"):
        save_model(model, target)
    assert target.read_text() == "keep me"
