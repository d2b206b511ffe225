"""Tokenizer metadata: tokens, types, merges and special ids read back; the pre-tokenizers llama.cpp
re-implements are recognised and the rest refused; the chat template renders what trillion's V4
encoder (checked against DeepSeek's golden prompts in tests/chat) writes."""

import json

import pytest
from helpers import mixed_config, random_model

from trillion.assets import demo_path
from trillion.chat import encode_messages
from trillion.gguf import CHAT_TEMPLATE, read_vocab
from trillion.gguf.vocab import CONTROL, NORMAL, UNUSED, pre_tokenizer_name
from trillion.tokenizer import Tokenizer

gguf = pytest.importorskip("gguf")
from trillion.gguf import export_gguf

DEMO_TOKENIZER = demo_path() / "tokenizer.json"
OK = {"compress_ratios": (0, 4, 128, 4, 128, 0), "index_head_dim": 64}


def test_demo_tokenizer_read_back(tmp_path):
    hf = Tokenizer.from_file(DEMO_TOKENIZER)
    n = hf.vocab_size
    model = random_model(mixed_config(**OK, vocab_size=n + 3), seed=0)  # 3 ids the tokenizer leaves empty
    reader = gguf.GGUFReader(export_gguf(model, tmp_path / "m.gguf", tokenizer=DEMO_TOKENIZER))
    f = {k: v.contents() for k, v in reader.fields.items()}
    assert f["tokenizer.ggml.model"] == "gpt2" and f["tokenizer.ggml.pre"] == "gpt-2"
    assert f["tokenizer.ggml.tokens"][:n] == [hf.id_to_token(i) for i in range(n)]
    assert f["tokenizer.ggml.tokens"][n:] == [f"[PAD{i}]" for i in range(n, n + 3)]
    types = f["tokenizer.ggml.token_type"]
    assert types[:10] == [CONTROL] * 10 and set(types[10:n]) == {NORMAL} and types[n:] == [UNUSED] * 3
    merges = json.loads(DEMO_TOKENIZER.read_text(encoding="utf-8"))["model"]["merges"]
    assert f["tokenizer.ggml.merges"] == [m if isinstance(m, str) else " ".join(m) for m in merges]
    assert (f["tokenizer.ggml.bos_token_id"], f["tokenizer.ggml.eos_token_id"]) == (0, 1)
    assert f["tokenizer.ggml.pad_token_id"] == hf.token_id("<｜▁pad▁｜>")
    assert f["tokenizer.ggml.add_bos_token"] is False and f["tokenizer.chat_template"] == CHAT_TEMPLATE


def test_tokenizer_larger_than_the_model_is_refused():
    with pytest.raises(ValueError, match="more than the model's vocab_size = 100"):
        read_vocab(DEMO_TOKENIZER, mixed_config(**OK, vocab_size=100))


def test_folder_chat_template_wins(tmp_path):
    (tmp_path / "tokenizer.json").write_text(DEMO_TOKENIZER.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    assert read_vocab(tmp_path, mixed_config(**OK, vocab_size=4096)).chat_template == "{{ messages }}"


DEEPSEEK_V3_PRE = {
    "type": "Sequence",
    "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}"}, "behavior": "Isolated", "invert": False},
        {
            "type": "Split",
            "pattern": {"Regex": "[一-龥\u3040-ゟ゠-ヿ]+"},
            "behavior": "Isolated",
            "invert": False,
        },
        {
            "type": "Split",
            "pattern": {
                "Regex": "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}"
                "\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
            },
            "behavior": "Isolated",
            "invert": False,
        },
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
    ],
}


def test_pre_tokenizer_names():
    assert pre_tokenizer_name({"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}) == "gpt-2"
    assert pre_tokenizer_name(DEEPSEEK_V3_PRE) == "deepseek-v3"
    other = json.loads(json.dumps(DEEPSEEK_V3_PRE))
    other["pretokenizers"][0]["pattern"]["Regex"] = "\\p{N}"  # Qwen-style single digits
    for pre in (other, {"type": "Metaspace"}, {"type": "ByteLevel", "add_prefix_space": True}, None):
        with pytest.raises(ValueError, match="llama.cpp"):
            pre_tokenizer_name(pre)


CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Name a colour."},
    ],
    [
        {"role": "user", "content": "one"},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "three", "reasoning_content": "count"},
        {"role": "user", "content": "four"},
    ],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "reasoning_content": "r"}],
]


@pytest.mark.parametrize("thinking", [False, True])
@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_chat_template_matches_the_encoder(messages, thinking):
    jinja2 = pytest.importorskip("jinja2")
    template = jinja2.Environment().from_string(CHAT_TEMPLATE)
    msgs = [{"reasoning_content": None, **m} for m in messages]
    got = template.render(
        messages=msgs, bos_token="<｜begin▁of▁sentence｜>", add_generation_prompt=True, thinking=thinking
    )
    assert got == encode_messages(messages, thinking=thinking)


def test_cli_takes_the_folders_tokenizer(tmp_path):
    from trillion.checkpoint import save_model
    from trillion.cli.main import main

    src = save_model(random_model(mixed_config(**OK, vocab_size=4096), seed=0), tmp_path / "src")
    (src / "tokenizer.json").write_text(DEMO_TOKENIZER.read_text(encoding="utf-8"), encoding="utf-8")
    assert main(["export", str(src), str(tmp_path / "a.gguf"), "--to", "gguf"]) == 0
    assert main(["export", str(src), str(tmp_path / "b.gguf"), "--to", "gguf", "--no-tokenizer"]) == 0
    a, b = (gguf.GGUFReader(tmp_path / n).fields for n in ("a.gguf", "b.gguf"))
    assert a["tokenizer.ggml.pre"].contents() == "gpt-2" and len(a["tokenizer.ggml.tokens"].contents()) == 4096
    assert a["general.name"].contents() == "src"
    assert b["tokenizer.ggml.model"].contents() == "none" and "tokenizer.ggml.tokens" not in b
