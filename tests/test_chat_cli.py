"""`trillion chat` on the shipped demo model: a scripted terminal session."""

import io

from trillion.cli.main import build_parser


def test_chat_session_streams_replies_and_keeps_history(monkeypatch):
    from trillion.cli import chat

    seen = []
    real = chat.run

    args = build_parser().parse_args(["chat", "--max-new-tokens", "8", "--seed", "1", "--threads", "1"])
    stdin = io.StringIO("def add(a, b):\n/reset\nimport os\n")
    stdout = io.StringIO()
    from trillion.chat import encoding

    orig = encoding.encode_messages

    def spy(messages, **kw):
        seen.append([dict(m) for m in messages])
        return orig(messages, **kw)

    monkeypatch.setattr(encoding, "encode_messages", spy)
    assert real(args, stdin=stdin, stdout=stdout) == 0
    out = stdout.getvalue()
    assert out.count("assistant> ") == 2
    # the first turn saw one user message; after /reset the second turn starts over
    assert [m["role"] for m in seen[0]] == ["user"] and seen[1] == [{"role": "user", "content": "import os"}]


def session(monkeypatch, lines, *options, stdin=None):
    """Run `trillion chat` on scripted input; (what was printed, the messages each turn sent)."""
    from trillion.chat import encoding
    from trillion.cli import chat

    seen = []
    orig = encoding.encode_messages

    def spy(messages, **kw):
        seen.append([dict(m) for m in messages])
        return orig(messages, **kw)

    monkeypatch.setattr(encoding, "encode_messages", spy)
    args = build_parser().parse_args(["chat", "--seed", "1", "--threads", "1", "--max-seqs", "1", *options])
    stdout = io.StringIO()
    assert chat.run(args, stdin=stdin or io.StringIO("".join(f"{x}\n" for x in lines)), stdout=stdout) == 0
    return stdout.getvalue(), seen


def test_commands_are_not_sent_to_the_model(monkeypatch):
    out, seen = session(monkeypatch, ["/help", "/nope", "//etc is a folder", "/exit", "never read"],
                        "--max-new-tokens", "2")
    assert "/reset" in out and "/exit" in out  # the /help list
    assert "unknown command /nope; /help lists the commands" in out
    assert [[m["content"] for m in s] for s in seen] == [["/etc is a folder"]]  # "//" sends a leading "/"


def test_the_oldest_turns_go_when_the_context_is_full(monkeypatch):
    line = "def function_with_a_long_name(argument_one, argument_two):"
    out, seen = session(monkeypatch, [f"{line} {i}" for i in range(4)],
                        "--max-model-len", "96", "--max-new-tokens", "8", "--temperature", "0")
    assert out.count("assistant> ") == 4  # every turn answered, none refused
    assert "dropped the oldest 2 messages" in out and "/reset starts over" in out
    last = seen[-1]
    assert last[-1]["content"] == f"{line} 3" and all(f"{line} 0" != m["content"] for m in last)


def test_a_message_too_long_for_the_context_keeps_the_conversation(monkeypatch):
    out, seen = session(monkeypatch, ["hello", "word " * 200, "again"],
                        "--max-model-len", "64", "--max-new-tokens", "4")
    assert "error: the message makes a prompt of" in out and "exceeds the context of 64 tokens" in out
    assert out.count("assistant> ") == 2
    assert [m["content"] for m in seen[-1] if m["role"] == "user"] == ["hello", "again"]


def test_a_line_that_is_not_utf8_is_refused_and_the_chat_goes_on(monkeypatch):
    bad = b"caf\xe9".decode("utf-8", "surrogateescape")  # Latin-1 bytes read as surrogateescape
    out, seen = session(monkeypatch, [bad, "ok"], "--max-new-tokens", "2")
    assert "error: the message is not valid UTF-8: byte 3 is 0xe9" in out
    assert [[m["content"] for m in s] for s in seen] == [["ok"]]


def test_ctrl_c_during_a_reply_stops_it_and_keeps_the_conversation(monkeypatch):
    """A real SIGINT in the middle of a reply: the reply stops after that token, the partial reply
    stays in the conversation, and the engine serves the next turn."""
    import signal

    from trillion.engine.llm import LLM

    real = LLM.stream
    calls = []

    def interrupted_once(self, *a, **kw):
        calls.append(1)
        for i, chunk in enumerate(real(self, *a, **kw)):
            yield chunk
            if len(calls) == 1 and i == 2:
                signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(LLM, "stream", interrupted_once)
    out, seen = session(monkeypatch, ["def f():", "import os"], "--max-new-tokens", "30", "--temperature", "0")
    assert out.count(" [stopped]\n") == 1 and out.count("assistant> ") == 2
    first_reply = seen[1][1]
    assert first_reply["role"] == "assistant" and first_reply["content"]  # the partial reply, kept
    assert seen[1][0]["content"] == "def f():" and seen[1][2]["content"] == "import os"


class Keys:
    """stdin on which the user presses Ctrl-C while typing, then types a line, then Ctrl-D."""

    def __init__(self):
        self.events = [KeyboardInterrupt, "import os\n", ""]

    def readline(self):
        e = self.events.pop(0)
        if e is KeyboardInterrupt:
            raise KeyboardInterrupt
        return e


def test_ctrl_c_at_the_prompt_clears_the_line_and_ctrl_d_leaves(monkeypatch):
    out, seen = session(monkeypatch, [], "--max-new-tokens", "2", stdin=Keys())
    assert out.count("you> ") == 3 and out.count("assistant> ") == 1
    assert [[m["content"] for m in s] for s in seen] == [["import os"]]


def test_a_terminal_gets_readline_editing(monkeypatch):
    import sys

    from trillion.cli.chat import line_reader

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    monkeypatch.setattr(sys, "stdin", tty)
    assert line_reader(sys.stdin, sys.stdout) is input and "readline" in sys.modules
