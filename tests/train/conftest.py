"""A micro model, a small synthetic Python corpus, and one short training run shared by the tests."""

import json
import random

import pytest
import torch

from trillion.config import ModelConfig
from trillion.train import TrainConfig, train


@pytest.fixture(autouse=True, scope="package")
def _one_thread():
    # These models are tiny: one thread is as fast, and on a shared CPU far faster than two
    # (OpenMP threads spin-waiting on a busy core).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def micro_config(**overrides) -> ModelConfig:
    """Every V4 piece at toy size: hash + window layer, CSA (indexer top-2), HCA, window-only MTP."""
    kw = {
        "vocab_size": 320,
        "dim": 32,
        "n_layers": 3,
        "n_heads": 2,
        "head_dim": 16,
        "rope_head_dim": 8,
        "q_lora_rank": 16,
        "o_groups": 2,
        "o_lora_rank": 8,
        "window_size": 8,
        "compress_ratios": (0, 4, 8, 0),
        "index_n_heads": 16,  # many heads: no indexer score ties (see tests/model/test_parity.py)
        "index_head_dim": 8,
        "index_topk": 2,
        "moe_inter_dim": 16,
        "n_routed_experts": 4,
        "n_activated_experts": 2,
        "n_hash_layers": 1,
        "original_seq_len": 0,
        "max_seq_len": 1024,
        "name": "micro",
    }
    kw.update(overrides)
    return ModelConfig(**kw)


def write_micro_config(path, **overrides):
    path.write_text(json.dumps(micro_config(**overrides).to_hf_dict()))
    return path


def python_like(seed: int, n_funcs: int = 12) -> str:
    rng = random.Random(seed)
    names = ["value", "item", "count", "name", "data", "result", "index", "total"]
    out = []
    for i in range(n_funcs):
        a, b = rng.sample(names, 2)
        out.append(f"def get_{a}_{i}(self, {b}):\n")
        out.append(f'    """Return the {a} for {b}."""\n')
        out.append(f"    if {b} is None:\n        return self.{a}\n")
        out.append(f"    {a} = {b} + {rng.randint(0, 9)}\n    return {a}\n\n")
    return "".join(out)


@pytest.fixture(scope="package")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    for i in range(10):
        (root / f"module_{i}.py").write_text(python_like(i))
    return root


@pytest.fixture(scope="package")
def micro_json(tmp_path_factory):
    return write_micro_config(tmp_path_factory.mktemp("cfg") / "config.json")


def run_config(corpus, micro_json, out, **overrides) -> TrainConfig:
    kw = {
        "flavor": str(micro_json),
        "data": (str(corpus),),
        "out": str(out),
        "seq_len": 32,
        "batch": 4,
        "heldout": 0.2,
        "steps": 6,
        "warmup": 2,
        "lr": 1e-2,
        "log_every": 1,
        "eval_every": 0,
        "eval_batches": 2,
        "save_every": 3,
        "keep": 2,
        "progress": False,
    }
    kw.update(overrides)
    return TrainConfig(**kw)


@pytest.fixture(scope="package")
def short_run(corpus, micro_json, tmp_path_factory):
    """Six steps, uninterrupted, checkpoints at 3 and 6: (TrainConfig, TrainResult)."""
    cfg = run_config(corpus, micro_json, tmp_path_factory.mktemp("runs") / "whole")
    return cfg, train(cfg)
