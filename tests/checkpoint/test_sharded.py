"""Several shards + model.safetensors.index.json, read back by us and by transformers."""

import json

import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from trillion.checkpoint import load_model, save_model

MAX = 100_000


@torch.no_grad()
def test_sharded_round_trip(model, tokens, logits, tmp_path):
    path = save_model(model, tmp_path / "sharded", max_shard_bytes=MAX)
    index = json.loads((path / "model.safetensors.index.json").read_text())
    files = sorted(p.name for p in path.glob("*.safetensors"))
    assert not (path / "model.safetensors").exists()
    assert len(files) >= 3 and files == sorted(set(index["weight_map"].values()))
    assert files[0] == f"model-00001-of-{len(files):05d}.safetensors"

    total, seen = 0, set()
    for name in files:
        with safe_open(str(path / name), "pt") as f:
            keys = set(f.keys())
            shard = sum(f.get_tensor(k).numel() * f.get_tensor(k).element_size() for k in keys)
        assert {k for k, v in index["weight_map"].items() if v == name} == keys
        assert shard <= MAX or len(keys) == 1
        assert not keys & seen
        seen |= keys
        total += shard
    assert index["metadata"]["total_size"] == total
    assert len(seen) == len(model.state_dict())

    assert torch.equal(load_model(path)(tokens), logits)
    ref = AutoModelForCausalLM.from_pretrained(str(path)).eval()
    assert (ref(tokens).logits - logits).abs().max().item() <= 1e-4


def test_big_shard_limit_gives_one_file(model, tmp_path):
    path = save_model(model, tmp_path / "one", max_shard_bytes=10**9)
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "generation_config.json", "model.safetensors"]
