"""Passkey retrieval (`trillion eval --task passkey`): prompts with the key where they say, scoring,
the grid, and the command through the engine on a micro model."""

import json
import re

import pytest

from trillion.cli.main import main
from trillion.train import passkey, train

from .conftest import run_config


def byte_encode(text: str) -> list[int]:
    return list(text.encode())  # one token a byte: positions are easy to check by hand


def byte_decode(ids: list[int]) -> str:
    return bytes(i for i in ids if i < 256).decode(errors="replace")


@pytest.fixture
def haystack(corpus):
    return passkey.Haystack(byte_encode, [str(corpus)], bos_id=999)


@pytest.mark.parametrize("context, depth", [(300, 0.0), (300, 0.5), (301, 1.0), (1000, 0.3)])
def test_prompt_puts_the_key_at_its_depth(haystack, context, depth):
    p = haystack.prompt(context, depth, "12345", trial=1)
    header, question = byte_encode(passkey.HEADER), byte_encode(passkey.QUESTION)
    needle = byte_encode(passkey.NEEDLE.format(key="12345"))
    n_filler = context - 1 - len(header) - len(needle) - len(question)
    assert len(p.ids) == context and p.ids[0] == 999
    assert p.ids[1 : 1 + len(header)] == header and p.ids[-len(question):] == question
    assert p.needle_at == 1 + len(header) + round(depth * n_filler)
    assert p.ids[p.needle_at : p.needle_at + p.needle_len] == needle
    # the filler around the needle is the corpus stream, unbroken, from the trial's start
    filler = p.ids[1 + len(header) : p.needle_at] + p.ids[p.needle_at + len(needle) : -len(question)]
    assert filler == haystack.filler(passkey.TRIAL_SHIFT, n_filler)
    assert "def get_" in byte_decode(filler)
    assert byte_decode(p.ids).count("12345") == 2  # the key appears in the needle only


def test_prompt_refuses_what_cannot_hold_the_needle(haystack):
    with pytest.raises(Exception, match="needs at least"):
        haystack.prompt(50, 0.5, "12345")
    with pytest.raises(Exception, match="between 0 and 1"):
        haystack.prompt(500, 1.5, "12345")


def test_keys_are_five_digits_and_fixed_by_their_cell():
    keys = {passkey.make_key(0, n, d, t) for n in (1024, 2048) for d in (0.0, 1.0) for t in range(3)}
    assert len(keys) == 12 and all(re.fullmatch(r"[1-9]\d{4}", k) for k in keys)
    assert passkey.make_key(0, 1024, 0.5, 1) == passkey.make_key(0, 1024, 0.5, 1) != passkey.make_key(1, 1024, 0.5, 1)


@pytest.mark.parametrize("answer, right", [(" 12345.", True), ("12345", True), (" 12345 is the pass key", True),
                                           (" 1234", False), (" 123456", False), (" 54321 12345", False),
                                           (" the key", False), ("", False)])
def test_is_correct_reads_the_first_number(answer, right):
    assert passkey.is_correct(answer, "12345") is right


def stub(rule):
    """An answer() that reads the key from the prompt (what a perfect model would say), then `rule`."""

    def answer(prompts):
        out = []
        for ids in prompts:
            text = byte_decode(ids)
            key = re.search(r"The pass key is (\d+)", text).group(1)
            out.append(rule(key, ids))
        return out

    return answer


def test_grid_scores_right_and_wrong_answers(haystack):
    contexts, depths = [300, 600], [0.0, 0.5, 1.0]
    right = passkey.run_grid(stub(lambda key, ids: f" {key}."), haystack, contexts, depths, trials=2)
    assert right["accuracy"] == 1.0 and len(right["cells"]) == 6
    assert all(c["correct"] == 2 and c["accuracy"] == 1.0 for c in right["cells"])
    wrong = passkey.run_grid(stub(lambda key, ids: f" {int(key) + 1}."), haystack, contexts, depths, trials=2)
    assert wrong["accuracy"] == 0.0 and all(c["correct"] == 0 for c in wrong["cells"])

    # right only where the needle sits in the first 40% of the prompt: the grid says which cells
    def early(key, ids):
        at = byte_decode(ids).index("The pass key")
        return f" {key}" if at < 0.4 * len(ids) else " 11111"

    mixed = passkey.run_grid(stub(early), haystack, contexts, depths, trials=2)
    acc = {(c["context"], c["depth"]): c["accuracy"] for c in mixed["cells"]}
    assert acc == {(n, d): (1.0 if d < 0.5 else 0.0) for n in contexts for d in depths}
    assert mixed["accuracy"] == pytest.approx(2 / 6)
    table = passkey.table(mixed)
    assert "| 0% | 100% | 100% |" in table and "| 100% | 0% | 0% |" in table and "| all | 33% | 33% |" in table


def test_passkey_command_runs_the_engine_and_draws_the_heatmap(short_run, tmp_path, capsys):
    _, result = short_run  # a micro model (position limit 1024) with its tokenizer, trained 6 steps
    out = tmp_path / "pk"
    args = ["eval", "--task", "passkey", "--model", str(result.model_dir), "--context", "200,1100",
            "--depths", "0,1", "--trials", "1", "--threads", "1"]
    assert main(args) == 1  # 1100 is past the position limit: refused without the option
    assert "--allow-long-context" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="position limit"):
        assert main([*args, "--allow-long-context", "--out", str(out), "--max-seqs", "2"]) == 0
    printed = capsys.readouterr().out
    assert "| depth | 200 | 1,100 |" in printed.replace("1100", "1,100")
    got = json.loads((out / "passkey.json").read_text())
    assert got["contexts"] == [200, 1100] and len(got["cells"]) == 4
    assert all(len(c["answers"]) == 1 for c in got["cells"])
    assert 0.0 <= got["accuracy"] <= 1.0
    assert (out / "passkey.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_examples_hold_the_key_and_its_answer():
    import random

    import torch

    stream = torch.tensor(byte_encode("def f(x):\n    return x + 1\n\n" * 40), dtype=torch.int32)
    ex = passkey.TrainingExamples(byte_encode, stream, 400, bos_id=300, eos_id=301)
    rng = random.Random(0)
    depths = []
    for _ in range(5):
        ids = ex.example(rng)
        assert len(ids) == 400 and ids[0] == 300 and ids[-1] == 301
        text = byte_decode(ids)
        key = re.search(r"The pass key is (\d+)\.", text).group(1)
        assert text.endswith(passkey.QUESTION + f" {key}.") or text[:-1].endswith(passkey.QUESTION + f" {key}.")
        depths.append(text.index("The pass key") / len(text))
    assert max(depths) - min(depths) > 0.2  # the needle moves
    batch = torch.zeros(4, 400, dtype=torch.long)
    mixed = ex.mix(batch, 0.5, random.Random(1))
    assert (mixed[:2] != 0).any(dim=1).all() and (mixed[2:] == 0).all() and (batch == 0).all()
    with pytest.raises(Exception, match="--seq-len"):
        passkey.TrainingExamples(byte_encode, stream, 100, 300, 301).example(rng)


def test_training_with_passkey_examples(corpus, micro_json, tmp_path):
    cfg = run_config(corpus, micro_json, tmp_path / "pk-run", seq_len=192, batch=2, steps=2, save_every=2, passkey=0.5)
    result = train(cfg)
    info = json.loads((result.model_dir / "training.json").read_text())
    assert info["train_config"]["passkey"] == 0.5 and result.eval["eval_loss"] > 0
