"""The demo model shipped in the package: present, small, loads, generates, and its documented
perplexity is what `trillion eval` gives."""

import json
from pathlib import Path

import pytest
import torch

from trillion.assets import demo_path
from trillion.checkpoint import load_model
from trillion.flavors import FLAVORS
from trillion.train import complete, evaluate_folder
from trillion.train.tokenizer import load_tokenizer

DOCS = Path(__file__).parents[2] / "docs" / "training.md"


@pytest.fixture(scope="module")
def demo():
    folder = demo_path()
    return folder, json.loads((folder / "training.json").read_text())


def test_demo_is_small_and_complete(demo):
    folder, info = demo
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "training.json", "tokenizer_config.json",
            "special_tokens_map.json", "generation_config.json"} <= names
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 25 * 1000**2
    model = load_model(folder)
    assert model.cfg == FLAVORS["demo-random"].replace(name=model.cfg.name)
    assert info["data"] == ["stdlib"] and info["eval"]["eval_ppl"] > 1


def test_demo_generates_python(demo):
    folder, _ = demo
    model, tok = load_model(folder), load_tokenizer(folder)
    text = complete(model, tok, "def fibonacci(n):", max_new_tokens=24)
    assert len(tok.encode(text, add_special_tokens=False).ids) >= 8
    assert any(word in text for word in ("def ", "return", "pass", "self", "if ")), text


def test_demo_beats_chance_on_heldout_text(demo):
    folder, info = demo
    got = evaluate_folder(folder, max_batches=2)
    assert got["eval_loss"] < info["eval"]["eval_loss"] + 1.0 < torch.log(torch.tensor(4096.0)).item()


def test_docs_report_the_shipped_perplexity(demo):
    _, info = demo
    assert f"{info['eval']['eval_ppl']:.2f}" in DOCS.read_text()


@pytest.mark.slow  # a full held-out evaluation (minutes on a CPU): `pytest -m slow`
def test_eval_reproduces_the_documented_perplexity(demo):
    folder, info = demo
    assert evaluate_folder(folder)["eval_ppl"] == info["eval"]["eval_ppl"]
