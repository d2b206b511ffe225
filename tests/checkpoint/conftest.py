"""Shared models and folders for the checkpoint tests (built once per session: they are the slow part)."""

import pytest
import torch
from helpers import mixed_config, random_model

from trillion.checkpoint import save_model


def official_config():
    """mixed_config with widths FP4 storage accepts: dim 128 (one full FP8 block), expert width 32."""
    return mixed_config(dim=128, moe_inter_dim=32, name="official-test")


@pytest.fixture(scope="session")
def model():
    return random_model(mixed_config(), seed=0)


@pytest.fixture(scope="session")
def tokens():
    # 45 tokens: several windows of 8, many CSA blocks of 4 and HCA blocks of 16, none a multiple.
    return torch.randint(0, 97, (2, 45), generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="session")
def logits(model, tokens):
    with torch.no_grad():
        return model(tokens)


@pytest.fixture(scope="session")
def hf_folder(model, tmp_path_factory):
    return save_model(model, tmp_path_factory.mktemp("hf") / "ckpt", layout="hf")


@pytest.fixture(scope="session")
def official_model():
    return random_model(official_config(), seed=3)


@pytest.fixture(scope="session")
def official_folder(official_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("ds") / "ckpt"
    return save_model(official_model, path, layout="deepseek", max_shard_bytes=300_000)
