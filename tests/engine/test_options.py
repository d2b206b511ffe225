"""What the engine and the Python API accept: engine options checked up front, vLLM's `max_tokens`,
the public `LLM.encode`, and the shipped model as the default."""

import pytest
import torch
from helpers import mixed_config, random_model

from trillion import LLM, load_model
from trillion.assets import demo_path
from trillion.engine.engine import Engine
from trillion.engine.sampling import SamplingParams
from trillion.errors import UserError
from trillion.flavors import FLAVORS


@pytest.fixture(scope="module")
def model():
    return random_model(mixed_config(vocab_size=300), seed=3)


@pytest.mark.parametrize("option", ["max_seqs", "prefill_chunk", "page_size", "num_draft_tokens",
                                    "max_model_len", "kv_cache_tokens"])
@pytest.mark.parametrize("value", [0, -1, 2.5])
def test_engine_options_are_checked(model, option, value):
    """`prefill_chunk=0` used to spin forever; every count is checked before anything is built."""
    with pytest.raises(UserError, match=rf"^{option} = {value}: expected an integer >= 1"):
        Engine(model, **{option: value})


def test_max_tokens_is_an_alias_of_max_new_tokens():
    assert SamplingParams(max_tokens=5).max_new_tokens == 5
    assert SamplingParams(max_tokens=5, max_new_tokens=5).max_new_tokens == 5
    assert SamplingParams().max_new_tokens == 64
    with pytest.raises(UserError, match="max_tokens = 5 and max_new_tokens = 6"):
        SamplingParams(max_tokens=5, max_new_tokens=6)
    with pytest.raises(UserError, match="max_new_tokens = -1"):
        SamplingParams(max_tokens=-1)


def test_encode_is_what_generate_sends(model):
    llm = LLM(model, max_seqs=1)
    assert llm.encode([3, 4]) == [3, 4]
    with pytest.raises(UserError, match="text prompts need a tokenizer"):
        llm.encode("text")


def test_demo_names_the_shipped_model_and_is_the_default():
    shipped = load_model(demo_path()).state_dict()
    for m in (load_model("demo"), load_model()):
        assert m.state_dict().keys() == shipped.keys()
        assert all(torch.equal(v, shipped[k]) for k, v in m.state_dict().items())
    fresh = load_model("demo-random")  # the untrained architecture keeps a name
    assert fresh.cfg == FLAVORS["demo-random"]
    assert not torch.equal(fresh.embed.weight, shipped["embed.weight"])
    llm = LLM(max_seqs=1)
    assert llm.tokenizer is not None and llm.encode("def f():") == llm.tokenizer.encode_prompt("def f():")
