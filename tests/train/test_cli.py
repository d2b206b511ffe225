"""`trillion train` and `trillion eval` as commands, and the sample completions of a trained model."""

import json

from trillion.checkpoint import load_model
from trillion.cli.main import main
from trillion.train import complete
from trillion.train.tokenizer import load_tokenizer


def test_train_command_then_eval_command(corpus, micro_json, tmp_path, capsys):
    out = tmp_path / "cli-run"
    args = [
        "train",
        "--flavor",
        str(micro_json),
        "--data",
        str(corpus),
        "--out",
        str(out),
        "--steps",
        "2",
        "--seq-len",
        "16",
        "--batch",
        "2",
        "--heldout",
        "0.2",
        "--save-every",
        "2",
        "--quiet",
        "--threads",
        "1",
    ]
    assert main(args) == 0
    assert "perplexity" in capsys.readouterr().out
    assert main(["eval", "--model", str(out / "model"), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    info = json.loads((out / "model" / "training.json").read_text())
    assert got["eval_ppl"] == info["eval"]["eval_ppl"] and got["seq_len"] == 16
    assert main(args) == 1  # the folder holds a run: refused without --resume
    assert "--resume" in capsys.readouterr().err


def test_sample_completion_is_deterministic(short_run):
    _, result = short_run
    model, tok = load_model(result.model_dir), load_tokenizer(result.model_dir)
    a = complete(model, tok, "def get_", max_new_tokens=12)
    assert a == complete(model, tok, "def get_", max_new_tokens=12)
    assert isinstance(a, str) and len(tok.encode(a, add_special_tokens=False).ids) <= 12
    b = complete(model, tok, "def get_", max_new_tokens=12, temperature=1.0, top_k=20, seed=1)
    assert b == complete(model, tok, "def get_", max_new_tokens=12, temperature=1.0, top_k=20, seed=1)
