"""The background compile mode (compile="auto", or TRILLION_COMPILE=auto for the default): eager from the first token, the decode step compiled in a
background thread, then run as that graph with the same greedy tokens; the on-disk cache goes to
the user's cache folder unless one was chosen; without a compiler, or when compiling fails, one
warning and eager decoding."""

import warnings

import pytest
import torch
from helpers import mixed_config, random_model
from torch.profiler import profile

from trillion.engine import compiling
from trillion.engine.llm import LLM
from trillion.engine.runner import ModelRunner
from trillion.engine.sampling import SamplingParams

PROMPTS = [[5, 6, 7, 8, 9, 10, 11], list(range(20, 43))]
GREEDY = SamplingParams(temperature=0, max_new_tokens=12, ignore_eos=True)


@pytest.fixture(scope="module")
def model():
    return random_model(mixed_config(vocab_size=300), seed=3)


@pytest.fixture(scope="module")
def references(model):
    """Greedy tokens of the full-sequence forward (argmax over the whole prefix each step)."""
    refs = []
    for p in PROMPTS:
        ids = list(p)
        with torch.no_grad():
            for _ in range(GREEDY.max_new_tokens):
                ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
        refs.append(ids[len(p):])
    return refs


@pytest.fixture
def default_mode(monkeypatch, tmp_path):
    """The background mode as a user turns it on (TRILLION_COMPILE=auto), an empty inductor cache
    (this test's own)."""
    monkeypatch.setenv(compiling.MODE_ENV, "auto")
    monkeypatch.setenv(compiling.CACHE_ENV, str(tmp_path / "inductor"))


def test_the_mode_follows_the_argument_then_the_environment(monkeypatch):
    monkeypatch.delenv(compiling.MODE_ENV, raising=False)
    assert compiling.resolve_mode("auto") == "auto"
    assert compiling.resolve_mode(None) is False  # the default: eager
    monkeypatch.setenv(compiling.MODE_ENV, "auto")
    assert compiling.resolve_mode(None) == "auto"
    assert compiling.resolve_mode(True) is True
    assert compiling.resolve_mode(False) is False
    monkeypatch.setenv(compiling.MODE_ENV, "0")
    assert compiling.resolve_mode("auto") is False
    assert compiling.resolve_mode(True) is True  # an explicit choice wins
    with pytest.raises(ValueError, match="compile = 'fast'"):
        compiling.resolve_mode("fast")


def test_the_cache_dir_is_set_only_when_the_user_did_not(monkeypatch, tmp_path):
    monkeypatch.delenv(compiling.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compiling.use_cache_dir() == str(tmp_path / "trillion" / "inductor")
    import os

    assert os.environ[compiling.CACHE_ENV] == str(tmp_path / "trillion" / "inductor")
    monkeypatch.setenv(compiling.CACHE_ENV, str(tmp_path / "mine"))
    assert compiling.use_cache_dir() == str(tmp_path / "mine")
    assert os.environ[compiling.CACHE_ENV] == str(tmp_path / "mine")


def test_the_cli_flag_maps_to_the_modes():
    from trillion.cli.main import build_parser

    p = build_parser()
    common = ["generate", "--prompt", "x"]
    assert p.parse_args(common).compile is None  # -> the default: eager, or TRILLION_COMPILE's mode
    assert p.parse_args([*common, "--compile"]).compile is True
    assert p.parse_args([*common, "--no-compile"]).compile is False
    assert p.parse_args(["serve", "--no-compile"]).compile is False


def test_without_a_compiler_it_warns_once_and_runs_eagerly(model, references, default_mode, monkeypatch):
    monkeypatch.setattr(compiling, "missing_compiler", lambda: "InvalidCxxCompiler: no working C++ compiler found")
    with pytest.warns(UserWarning, match="no C\\+\\+ compiler .*running eagerly"):
        llm = LLM(model, max_seqs=2)
    assert llm.engine.runner.background is None and not llm.engine.runner.compiled
    assert [o.token_ids for o in llm.generate(PROMPTS, GREEDY)] == references


def test_a_failed_background_compile_warns_once_and_stays_eager(model, references, default_mode, monkeypatch):
    def fail(self, *args):
        raise RuntimeError("C++ compile error: g++ exited with 1")

    monkeypatch.setattr(ModelRunner, "_compile_on_scratch", fail)
    llm = LLM(model, max_seqs=2)
    assert llm.engine.runner.wait_compiled(timeout=60)
    with pytest.warns(UserWarning, match="compiling the decode step failed .*g\\+\\+ exited with 1"):
        first = llm.generate(PROMPTS[:1], GREEDY)[0].token_ids
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        second = llm.generate(PROMPTS[1:], GREEDY)[0].token_ids
    assert [first, second] == references


@pytest.mark.slow
def test_the_default_engine_decodes_through_the_compiled_graph(model, references, default_mode, tmp_path):
    """First tokens eagerly, then (the background compile done) every decode step in the compiled
    graph, batch 1 and a batch, with the full forward's greedy tokens; the graphs land in the cache."""
    llm = LLM(model, max_seqs=2)
    runner = llm.engine.runner
    assert runner.background is not None
    assert llm.generate(PROMPTS[:1], GREEDY)[0].token_ids == references[0]  # eager or compiled by now
    assert runner.wait_compiled(timeout=1800)
    assert runner.background.error is None
    with profile() as prof:
        out = llm.generate(PROMPTS[:1], GREEDY)[0].token_ids
    regions = [e for e in prof.events() if e.name.startswith("Torch-Compiled Region")]
    assert len(regions) >= GREEDY.max_new_tokens - 1  # every decode step (prefill stays eager)
    assert out == references[0]
    llm.generate(PROMPTS, GREEDY)  # queues the batch's graph
    assert runner.wait_compiled(timeout=1800)
    assert [o.token_ids for o in llm.generate(PROMPTS, GREEDY)] == references
    assert any((tmp_path / "inductor").rglob("*.py")) or any((tmp_path / "inductor").rglob("*.so"))


@pytest.mark.slow
def test_speculative_steps_run_their_background_graphs(model, references, default_mode, monkeypatch):
    """Drafts (a column of the drafts tensor), checks and the MTP catch-up (slices of the check's
    streams) reach the graphs compiled on the scratch pool: no guard fails (strides, views)."""
    llm = LLM(model, max_seqs=2, speculative="mtp", num_draft_tokens=2)
    for _ in range(2):  # the catch-up lengths are queued as they occur
        llm.generate(PROMPTS[:1], GREEDY)
        assert llm.engine.runner.wait_compiled(timeout=1800)

    def run_or_fail(fn, *args):
        with torch.compiler.set_stance("fail_on_recompile"):
            return fn.run_only(*args)

    monkeypatch.setattr(compiling.Background, "run", staticmethod(run_or_fail))
    assert llm.generate(PROMPTS[:1], GREEDY)[0].token_ids == references[0]
