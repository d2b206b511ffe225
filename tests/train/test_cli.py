"""`trillion train` and `trillion eval` as commands, and the sample completions of a trained model."""

import json

from trillion.checkpoint import load_model
from trillion.cli.main import main
from trillion.train import complete
from trillion.train.metrics import MetricsLog
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


def _train_args(corpus, micro_json, out, *more):
    return ["train", "--flavor", str(micro_json), "--data", str(corpus), "--out", str(out), "--seq-len", "16",
            "--batch", "2", "--heldout", "0.2", "--warmup", "1", "--log-every", "1", "--save-every", "2",
            "--eval-every", "0", "--quiet", "--threads", "1", *more]


def test_resume_with_more_steps_extends_a_finished_run(corpus, micro_json, tmp_path, capsys):
    """`--resume --steps N` past the end of a finished run trains on to N: the steps taken keep their
    learning rates, the new ones run at the floor, and the result equals an uninterrupted run with
    `--decay-steps` at the old end."""
    run = tmp_path / "extended"
    assert main(_train_args(corpus, micro_json, run, "--steps", "4")) == 0
    assert main(_train_args(corpus, micro_json, run, "--steps", "3", "--resume")) == 1
    assert "--steps can only grow" in capsys.readouterr().err
    assert main(_train_args(corpus, micro_json, run, "--steps", "6", "--resume")) == 0
    assert main(_train_args(corpus, micro_json, tmp_path / "whole", "--steps", "6", "--decay-steps", "4")) == 0
    capsys.readouterr()

    def train_records(folder):
        return {r["step"]: r for r in MetricsLog(folder).read() if r["kind"] == "train"}

    ext, whole = train_records(run), train_records(tmp_path / "whole")
    assert list(ext) == [1, 2, 3, 4, 5, 6]
    assert {s: r["loss"] for s, r in ext.items()} == {s: r["loss"] for s, r in whole.items()}  # exact
    floor = 5e-3 * 0.1  # --lr x --min-lr-ratio: where the cosine of the 4-step run would have arrived
    assert ext[4]["lr"] > floor and ext[5]["lr"] == ext[6]["lr"] == floor
    info = json.loads((run / "model" / "training.json").read_text())
    assert info["steps"] == 6 and info["train_config"]["decay_steps"] == 4
    assert info["eval"] == json.loads((tmp_path / "whole" / "model" / "training.json").read_text())["eval"]


def test_sample_completion_is_deterministic(short_run):
    _, result = short_run
    model, tok = load_model(result.model_dir), load_tokenizer(result.model_dir)
    a = complete(model, tok, "def get_", max_new_tokens=12)
    assert a == complete(model, tok, "def get_", max_new_tokens=12)
    assert isinstance(a, str) and len(tok.encode(a, add_special_tokens=False).ids) <= 12
    b = complete(model, tok, "def get_", max_new_tokens=12, temperature=1.0, top_k=20, seed=1)
    assert b == complete(model, tok, "def get_", max_new_tokens=12, temperature=1.0, top_k=20, seed=1)
