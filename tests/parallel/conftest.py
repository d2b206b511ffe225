"""Checkpoint folders the distributed workers load, written once per session."""

import pytest
from helpers import random_model

from tests.parallel import cases
from trillion.checkpoint import save_model


@pytest.fixture(scope="session")
def hf_folder(tmp_path_factory):
    return save_model(random_model(cases.config()), tmp_path_factory.mktemp("par-hf") / "ckpt", layout="hf",
                      max_shard_bytes=200_000)


@pytest.fixture(scope="session")
def official_folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("par-ds") / "ckpt"
    return save_model(random_model(cases.official_config(), seed=3), path, layout="deepseek", max_shard_bytes=300_000)
