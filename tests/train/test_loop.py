"""Whole runs: training lowers the held-out loss, resuming is exact, checkpoints load in
transformers with the same logits, and `trillion eval` reproduces the run's final perplexity."""

import json

import pytest
import torch

from trillion.checkpoint import load_model
from trillion.train import TrainConfig, evaluate_folder, train
from trillion.train.metrics import MetricsLog
from trillion.train.state import list_checkpoints

from .conftest import run_config


def _losses(run_dir):
    return {r["step"]: r["loss"] for r in MetricsLog(run_dir).read() if r["kind"] == "train"}


def test_tiny_run_lowers_the_heldout_loss(corpus, micro_json, tmp_path):
    cfg = run_config(corpus, micro_json, tmp_path / "run", steps=30, warmup=3, log_every=10, save_every=30)
    result = train(cfg)
    assert result.eval["eval_loss"] < result.first_eval["eval_loss"] - 1.0, (result.first_eval, result.eval)
    for name in ("metrics.jsonl", "loss.png", "expert_load.png", "model/config.json", "model/tokenizer.json",
                 "model/tokenizer_config.json", "model/generation_config.json"):
        assert (tmp_path / "run" / name).is_file(), name


def test_resume_equals_uninterrupted_training(short_run, corpus, micro_json, tmp_path):
    cfg, whole = short_run
    part = run_config(corpus, micro_json, tmp_path / "split", stop_after=3)
    first = train(part)
    assert first.step == 3 and [s for s, _ in list_checkpoints(tmp_path / "split")] == [3]
    with pytest.raises(ValueError, match="--resume"):
        train(part)
    with pytest.raises(ValueError, match="different settings"):
        train(part.replace(resume=True, lr=0.5))
    second = train(part.replace(resume=True, stop_after=None))
    assert second.step == 6
    whole_losses, split_losses = _losses(cfg.out), _losses(tmp_path / "split")
    assert list(split_losses) == [1, 2, 3, 4, 5, 6]
    assert split_losses == whole_losses  # exact equality, every step after the resume too
    assert second.eval == whole.eval
    a, b = load_model(whole.model_dir).state_dict(), load_model(second.model_dir).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoints_keep_the_last_k_and_hold_trainer_state(short_run):
    cfg, _ = short_run
    ckpts = list_checkpoints(cfg.out)
    assert [s for s, _ in ckpts] == [3, 6]
    state = json.loads((ckpts[-1][1] / "trainer_state.json").read_text())
    assert state["step"] == 6 and set(state["optimizers"]) == {"muon", "adamw"}
    assert not list((ckpts[-1][1]).glob("*.pt"))  # no pickle


def test_checkpoint_loads_in_transformers_with_the_same_logits(short_run):
    from transformers import AutoModelForCausalLM

    cfg, _ = short_run
    folder = list_checkpoints(cfg.out)[-1][1]
    ours = load_model(folder)
    theirs = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    ids = torch.randint(2, 300, (2, 29), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (ours(ids) - theirs(ids).logits.float()).abs().max().item()
    assert diff <= 1e-4, diff


def test_eval_reproduces_the_final_perplexity(short_run):
    cfg, whole = short_run
    got = evaluate_folder(whole.model_dir)
    assert got["eval_loss"] == whole.eval["eval_loss"] and got["eval_ppl"] == whole.eval["eval_ppl"]
    info = json.loads((whole.model_dir / "training.json").read_text())
    assert info["eval"]["eval_ppl"] == whole.eval["eval_ppl"] and info["seq_len"] == cfg.seq_len


def test_config_round_trip_and_validation():
    cfg = TrainConfig(data=("stdlib", "x"), steps=10)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="heldout"):
        TrainConfig(heldout=0.0)
    assert cfg.trajectory_diff(cfg.replace(out="elsewhere", stop_after=3)) == []
    assert cfg.trajectory_diff(cfg.replace(lr=1.0)) == ["lr"]


def test_export_ships_bf16_weights_whose_perplexity_eval_reproduces(short_run, tmp_path):
    from safetensors import safe_open

    from trillion.train.export import export_model

    _, whole = short_run
    got = export_model(whole.model_dir, tmp_path / "shipped")
    with safe_open(str(tmp_path / "shipped" / "model.safetensors"), framework="pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118 (a safe_open handle, not a dict)
    assert dtypes == {"BF16", "I64"}  # I64: the hash-routing tables
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        assert (tmp_path / "shipped" / name).is_file(), name
    assert evaluate_folder(tmp_path / "shipped")["eval_ppl"] == got["eval_ppl"]
    assert abs(got["eval_loss"] - whole.eval["eval_loss"]) < 0.05  # bf16 rounding only
