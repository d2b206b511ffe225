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
