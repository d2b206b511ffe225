"""Shared tiny models for the quantisation tests: every width a multiple of 128 or 64, so that every
scheme (int4 groups, MX blocks of 32, activation blocks of 128) fits every quantised weight."""

import contextlib

import pytest
import torch
from helpers import mixed_config, random_model

from trillion.model import Transformer
from trillion.model.init import init_weights


@contextlib.contextmanager
def one_thread():
    """One thread: these models are tiny, and OpenMP threads on a shared, loaded machine cost more than
    they give (a forward of the test model goes from ~0.03 s to ~2.5 s with two busy cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def quant_config(**overrides):
    """wo_a's input H*K/G = 128, group width r = 64 (a whole int4 kernel block), vocab 97 (odd head)."""
    kw = {
        "dim": 128,
        "n_heads": 4,
        "head_dim": 64,
        "rope_head_dim": 16,
        "q_lora_rank": 128,
        "o_groups": 2,
        "o_lora_rank": 64,
        "moe_inter_dim": 128,
        "name": "quant-test",
    }
    kw.update(overrides)
    return mixed_config(**kw)


@pytest.fixture(scope="session")
def model():
    with one_thread():
        return random_model(quant_config(), seed=0)


@pytest.fixture(scope="session")
def tokens():
    return torch.randint(0, 97, (2, 37), generator=torch.Generator().manual_seed(5))


@pytest.fixture(scope="session")
def logits(model, tokens):
    with torch.no_grad(), one_thread():
        return model(tokens)


@pytest.fixture(scope="session")
def smooth_model():
    """The default initialisation (small weights, unit norms): logits as smooth as a trained model's.
    random_model's large random weights make a chaotic model, where bf16 alone moves the logits a lot."""
    with one_thread():
        return init_weights(Transformer(quant_config()), seed=0).eval()
