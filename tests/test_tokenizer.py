"""Text prompts start with BOS, as the folder's tokenizer_config.json says (`add_bos_token`), and
everywhere text becomes ids for a plain prompt: `Tokenizer.encode_prompt`, `LLM`, `trillion
generate`. A broken tokenizer file is named in the error."""

import json
import shutil

import pytest
import torch

from trillion.assets import DEMO
from trillion.checkpoint import load_model
from trillion.cli.main import main
from trillion.engine import LLM, SamplingParams
from trillion.tokenizer import Tokenizer, TokenizerError
from trillion.train.tokenizer import BOS, BOS_ID, train_tokenizer

TEXT = "def fibonacci(n):"


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    """A tokenizer.json as training writes it (no post-processor), alone in a folder."""
    tok = train_tokenizer([f"def f{i}(n):\n    return n * {i}\n" for i in range(100)], 300)
    folder = tmp_path_factory.mktemp("bare")
    tok.save(str(folder / "tokenizer.json"))
    return folder


def _copy(bare, tmp_path, **files):
    folder = tmp_path / "tok"
    shutil.copytree(bare, folder)
    for name, doc in files.items():
        (folder / f"{name}.json").write_text(json.dumps(doc))
    return Tokenizer.from_file(folder)


def test_the_tokenizer_config_decides(bare, tmp_path):
    plain = Tokenizer.from_file(bare / "tokenizer.json").encode(TEXT)
    assert plain[0] != BOS_ID
    on = _copy(bare, tmp_path, tokenizer_config={"bos_token": BOS, "add_bos_token": True})
    assert on.encode_prompt(TEXT) == [BOS_ID, *plain]
    assert on.encode_prompt(BOS + TEXT) == [BOS_ID, *plain]  # a BOS typed in the text is not doubled
    assert on.encode_prompt("") == [BOS_ID]
    assert on.encode(TEXT) == plain  # encode itself adds nothing
    shutil.rmtree(tmp_path / "tok")
    off = _copy(bare, tmp_path, tokenizer_config={"bos_token": BOS, "add_bos_token": False})
    assert off.encode_prompt(TEXT, bos_token_id=BOS_ID) == plain


def test_without_tokenizer_config_the_model_config_bos_is_added(bare, tmp_path):
    folder = _copy(bare, tmp_path, config={"bos_token_id": 5})
    assert folder.encode_prompt(TEXT) == [5, *Tokenizer.from_file(bare).encode(TEXT)]
    lone = Tokenizer.from_file(bare / "tokenizer.json")  # no config beside it: the caller's model BOS
    assert lone.encode_prompt(TEXT, bos_token_id=BOS_ID)[:1] == [BOS_ID]


def test_the_demo_adds_bos_as_transformers_does():
    transformers = pytest.importorskip("transformers")
    demo = Tokenizer.from_file(DEMO)
    assert demo.encode_prompt(TEXT) == transformers.AutoTokenizer.from_pretrained(DEMO)(TEXT)["input_ids"]
    assert demo.encode_prompt(TEXT)[0] == BOS_ID


def test_broken_tokenizer_files_are_named(bare, tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "tokenizer.json").write_text('{"version": "1.0", "added_tok')
    with pytest.raises(TokenizerError, match=r"broken/tokenizer.json: not a readable tokenizer.json \(.*EOF"):
        Tokenizer.from_file(folder)
    shutil.copy(bare / "tokenizer.json", folder / "tokenizer.json")
    (folder / "tokenizer_config.json").write_text("{")
    with pytest.raises(TokenizerError, match="broken/tokenizer_config.json: not valid JSON"):
        Tokenizer.from_file(folder)
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "add_bos_token": True}))
    with pytest.raises(TokenizerError, match="bos_token '<s>' is not a token"):
        Tokenizer.from_file(folder)


def test_generate_prompts_start_with_bos_and_match_the_model_by_hand(capsys):
    """`trillion generate --temperature 0 --prompt` on the demo: [BOS] + the text's ids, and the greedy
    continuation of exactly that sequence (the documented sample in docs/training.md)."""
    assert main(["generate", "--temperature", "0", "--prompt", TEXT, "--max-new-tokens", "12", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    ids = out["prompt_token_ids"]
    assert ids == [BOS_ID, *Tokenizer.from_file(DEMO).encode(TEXT)]
    model, seq = load_model(DEMO), list(ids)
    with torch.no_grad():
        for _ in range(12):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    assert out["outputs"][0]["token_ids"] == seq[len(ids):]
    assert out["outputs"][0]["text"].startswith(" pass\n\ndef _check_error(n):")  # docs/training.md's sample


def test_llm_text_prompts_start_with_bos_once():
    llm = LLM(DEMO)
    greedy = SamplingParams(temperature=0, max_new_tokens=4)
    by_text = llm.generate(TEXT, greedy)[0]
    assert by_text.prompt_token_ids[:2] == [BOS_ID, Tokenizer.from_file(DEMO).encode(TEXT)[0]]
    by_ids = llm.generate(by_text.prompt_token_ids, greedy)[0]  # ids are taken as they are
    assert by_ids.prompt_token_ids == by_text.prompt_token_ids and by_ids.token_ids == by_text.token_ids
    assert llm.generate(BOS + TEXT, greedy)[0].prompt_token_ids == by_text.prompt_token_ids
