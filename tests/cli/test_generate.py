"""`trillion generate` on the shipped demo model: where the prompt comes from, what is printed, and
how it ends (zero tokens, -n blocks, an error or Ctrl-C after the prompt was echoed)."""

import io
import json

import pytest

from trillion.assets import demo_path
from trillion.cli.main import main
from trillion.tokenizer import Tokenizer

FAST = ["--threads", "1", "--max-seqs", "2"]


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.from_file(demo_path())


def run_json(capsys, *argv):
    assert main(["generate", *FAST, "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


class Pipe:
    """Stands for sys.stdin when it is a pipe: not a terminal, bytes under .buffer."""

    def __init__(self, data: bytes):
        self.buffer = io.BytesIO(data)

    def isatty(self):
        return False


def test_prompt_from_flag_file_stdin_and_piped_stdin(tok, tmp_path, monkeypatch, capsys):
    text = "def fibonacci(n):\n"
    want = [0, *tok.encode(text)]  # text prompts start with the demo's BOS (tests/test_tokenizer.py)
    common = ["--max-new-tokens", "1", "--temperature", "0"]
    assert run_json(capsys, "-p", text, *common)["prompt_token_ids"] == want
    (tmp_path / "p.txt").write_text(text)
    assert run_json(capsys, "--prompt-file", str(tmp_path / "p.txt"), *common)["prompt_token_ids"] == want
    monkeypatch.setattr("sys.stdin", Pipe(text.encode()))
    assert run_json(capsys, "--prompt-file", "-", *common)["prompt_token_ids"] == want
    monkeypatch.setattr("sys.stdin", Pipe(text.encode()))
    assert run_json(capsys, *common)["prompt_token_ids"] == want  # no prompt option: the pipe is the prompt


def test_a_prompt_that_is_not_utf8_is_a_one_line_error(tmp_path, capsys):
    argv_prompt = b"ab\xff\xfe".decode("utf-8", "surrogateescape")  # how Python hands such argv over
    assert main(["generate", *FAST, "-p", argv_prompt]) == 1
    err = capsys.readouterr().err
    assert err == "trillion generate: error: --prompt is not valid UTF-8: byte 2 is 0xff 0xfe; give UTF-8 text\n"
    (tmp_path / "bad.txt").write_bytes(b"def \xc3(")
    assert main(["generate", *FAST, "--prompt-file", str(tmp_path / "bad.txt")]) == 1
    assert "bad.txt is not valid UTF-8: byte 4 is 0xc3" in capsys.readouterr().err


def test_zero_new_tokens_generates_none(capsys):
    """0 means no new tokens (the server's rule too); finish_reason "length". Needs the engine rule of
    the `serve` branch."""
    out = run_json(capsys, "-p", "def f():", "--max-new-tokens", "0")["outputs"]
    assert [(o["token_ids"], o["text"], o["finish_reason"]) for o in out] == [([], "", "length")]
    assert main(["generate", *FAST, "-p", "def f():", "--max-new-tokens", "0"]) == 0
    assert capsys.readouterr().out == "def f():\n"


def test_n_samples_stream_as_separate_blocks(capsys):
    argv = ["-p", "import ", "-n", "2", "--seed", "3", "--max-new-tokens", "12", "--ignore-eos"]
    outs = run_json(capsys, *argv)["outputs"]
    assert main(["generate", *FAST, *argv]) == 0
    printed = capsys.readouterr().out
    want = f"[sample 0]\nimport {outs[0]['text']}\n[sample 1]\nimport {outs[1]['text']}\n"
    assert printed == want


def test_an_error_after_the_echo_starts_on_a_new_line(capsys):
    # the request is refused once streaming starts, after the prompt was echoed
    assert main(["generate", *FAST, "-p", "def f():", "--max-model-len", "8", "--max-new-tokens", "16"]) == 1
    cap = capsys.readouterr()
    assert cap.out == "def f():\n"
    assert cap.err.count("\n") == 1 and "exceeds the maximum model length 8" in cap.err


def test_ctrl_c_while_streaming_ends_the_line_and_exits_130(monkeypatch, capsys):
    from trillion.engine.llm import LLM

    real = LLM.stream

    def interrupted(self, *a, **kw):
        for i, chunk in enumerate(real(self, *a, **kw)):
            if i == 2:
                raise KeyboardInterrupt
            yield chunk

    monkeypatch.setattr(LLM, "stream", interrupted)
    assert main(["generate", *FAST, "-p", "def f():", "--max-new-tokens", "20"]) == 130
    cap = capsys.readouterr()
    assert cap.out.startswith("def f():") and cap.out.endswith("\n") and cap.out.count("\n") >= 1
    assert cap.err == "trillion generate: interrupted\n"
