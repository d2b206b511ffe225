"""Model folders are complete for transformers (and so vLLM and lm-eval): AutoTokenizer finds BOS /
EOS and adds BOS to text, its chat template renders exactly what `encode_messages` renders, and
GenerationConfig loads; the shipped demo has these files, and convert / quantize write them."""

import json
import shutil
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trillion.assets import DEMO
from trillion.chat.encoding import encode_messages
from trillion.checkpoint import save_model
from trillion.checkpoint.side_files import special_tokens, tokenizer_config, write_side_files
from trillion.cli.main import main
from trillion.tokenizer import Tokenizer
from trillion.train.tokenizer import BOS, BOS_ID, EOS, EOS_ID, PAD, train_tokenizer

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf_demo():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.AutoTokenizer.from_pretrained(DEMO)


def test_the_demo_folder_is_complete_for_transformers(hf_demo):
    assert (hf_demo.bos_token, hf_demo.eos_token, hf_demo.pad_token) == (BOS, EOS, PAD)
    assert (hf_demo.bos_token_id, hf_demo.eos_token_id, hf_demo.pad_token_id) == (BOS_ID, EOS_ID, 2)
    assert hf_demo.model_max_length == json.loads((DEMO / "config.json").read_text())["max_position_embeddings"]
    ours = Tokenizer.from_file(DEMO)
    text = "def fibonacci(n):\n    return n"
    # BOS first, then exactly the ids the model was trained on (encoded without special tokens)
    assert hf_demo(text)["input_ids"] == [BOS_ID, *ours.encode(text)]
    assert hf_demo(BOS + text)["input_ids"][:2] == [BOS_ID, BOS_ID]  # transformers doubles a typed BOS
    gen = transformers.GenerationConfig.from_pretrained(DEMO)
    assert (gen.bos_token_id, gen.eos_token_id) == (BOS_ID, EOS_ID)
    assert 0 < gen.max_new_tokens <= hf_demo.model_max_length and gen.do_sample and 0 < gen.top_p <= 1


def test_the_shipped_files_are_what_the_writer_writes():
    config = json.loads((DEMO / "config.json").read_text())
    specials = special_tokens(DEMO / "tokenizer.json", config)
    assert json.loads((DEMO / "tokenizer_config.json").read_text()) == tokenizer_config(specials, config)
    assert json.loads((DEMO / "special_tokens_map.json").read_text()) == specials


text = st.text(st.sampled_from("ab \n<>|ü中"), max_size=6)
content = st.one_of(st.none(), text, st.lists(st.builds(lambda t: {"type": "text", "text": t}, text), max_size=2))
message = st.one_of(
    st.builds(lambda c: {"role": "system", "content": c}, text),
    st.builds(lambda c: {"role": "user", "content": c}, content),
    st.builds(lambda c: {"role": "assistant", "content": c}, content),
    st.builds(lambda c, r: {"role": "assistant", "content": c, "reasoning_content": r}, text, text),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.lists(message, min_size=1, max_size=7), thinking=st.booleans())
def test_the_chat_template_renders_what_encode_messages_renders(hf_demo, messages, thinking):
    # encode_messages always adds the assistant prefix after a final user turn; a template does so
    # when asked (add_generation_prompt), as every chat template does.
    ends_with_user = bool(messages) and messages[-1]["role"] == "user"
    got = hf_demo.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=ends_with_user, thinking=thinking
    )
    assert got == encode_messages(messages, thinking=thinking)


def test_the_chat_template_tokenizes_as_trillion_does(hf_demo):
    ours = Tokenizer.from_file(DEMO)
    chat = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Name a prime."},
        {"role": "assistant", "content": "7", "reasoning_content": "small ones"},
        {"role": "user", "content": "Another?"},
    ]
    for thinking in (False, True):
        ids = hf_demo.apply_chat_template(
            chat, add_generation_prompt=True, tokenize=True, return_dict=False, thinking=thinking
        )
        assert ids == ours.encode(encode_messages(chat, thinking=thinking))
        assert ids[:2] != [BOS_ID, BOS_ID] and ids[0] == BOS_ID  # one BOS, from the template
    # vLLM's and Qwen's name for the switch
    assert hf_demo.apply_chat_template(chat, tokenize=False, add_generation_prompt=True, enable_thinking=True) == (
        encode_messages(chat, thinking=True)
    )


@pytest.mark.parametrize(
    "messages, kwargs",
    [
        ([{"role": "user", "content": "hi"}], {"tools": [{"type": "function", "function": {"name": "f"}}]}),
        ([{"role": "user", "content": "hi"}, {"role": "tool", "content": "1", "tool_call_id": "a"}], {}),
        ([{"role": "assistant", "content": "", "tool_calls": [{"id": "a"}]}], {}),
    ],
)
def test_the_chat_template_refuses_what_it_does_not_render(hf_demo, messages, kwargs):
    with pytest.raises(Exception, match="trillion.chat.encoding"):
        hf_demo.apply_chat_template(messages, tokenize=False, **kwargs)


@pytest.fixture(scope="module")
def small_tokenizer(tmp_path_factory):
    """A tokenizer.json as `trillion train` writes it: DeepSeek's special tokens, no post-processor."""
    tok = train_tokenizer([f"def f{i}(x):\n    return x + {i}\n" for i in range(200)], 300)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


def assert_complete(folder, tokenizer_file):
    names = {p.name for p in folder.iterdir()}
    assert {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"} <= names
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = transformers.AutoTokenizer.from_pretrained(folder)
    assert (tok.bos_token_id, tok.eos_token_id) == (BOS_ID, EOS_ID)
    plain = Tokenizer.from_file(tokenizer_file).encode("def f(x):")
    assert tok("def f(x):")["input_ids"] == [BOS_ID, *plain]
    assert transformers.GenerationConfig.from_pretrained(folder).eos_token_id == EOS_ID


def test_convert_and_quantize_write_complete_folders(small_tokenizer, tmp_path):
    src = tmp_path / "src"
    assert main(["convert", "tiny", str(src), "--to", "hf"]) == 0
    assert (src / "generation_config.json").is_file() and not (src / "tokenizer_config.json").exists()
    shutil.copy(small_tokenizer, src / "tokenizer.json")  # a folder with tokenizer.json alone
    for args in (
        ["convert", str(src), str(tmp_path / "hf"), "--to", "hf"],
        ["convert", str(src), str(tmp_path / "ds"), "--to", "deepseek"],
        ["quantize", "--model", str(src), "--out", str(tmp_path / "q"), "--scheme", "int8", "--prompt-len", "8"],
    ):
        assert main(args) == 0
        assert_complete(tmp_path / args[2 if args[0] == "convert" else 4], small_tokenizer)
    assert_complete(save_model(_tiny(), tmp_path / "api", copy_files_from=small_tokenizer), small_tokenizer)


def _tiny():
    from trillion.checkpoint import load_model

    return load_model("tiny")


def test_a_source_folder_keeps_its_own_tokenizer_files(small_tokenizer, tmp_path):
    """Copied files win: a release's own tokenizer_config.json / generation_config.json are kept."""
    src = tmp_path / "src"
    save_model(_tiny(), src, copy_files_from=small_tokenizer)
    mine = {"tokenizer_class": "LlamaTokenizerFast", "bos_token": BOS, "add_bos_token": True}
    (src / "tokenizer_config.json").write_text(json.dumps(mine))
    (src / "generation_config.json").write_text('{"temperature": 0.6}')
    save_model(_tiny(), tmp_path / "dst", copy_files_from=src)
    assert json.loads((tmp_path / "dst" / "tokenizer_config.json").read_text()) == mine
    assert json.loads((tmp_path / "dst" / "generation_config.json").read_text()) == {"temperature": 0.6}


def test_a_corrupt_tokenizer_warns_and_writes_the_weights(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "tokenizer.json").write_text('{"version": "1.0", "mo')
    with pytest.warns(UserWarning, match="tokenizer.json"):
        write_side_files(folder, {"bos_token_id": 0, "eos_token_id": 1, "max_position_embeddings": 64})
    assert sorted(p.name for p in folder.iterdir()) == ["generation_config.json", "tokenizer.json"]
