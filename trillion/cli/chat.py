"""`trillion chat`: an interactive terminal chat, streaming, in DeepSeek-V4's chat format.

Each turn renders the whole conversation with `trillion.chat.encoding.encode_messages`, streams the
assistant's reply through `LLM.stream` and `trillion.chat.dsml.OutputParser` (reasoning shown dimmed
in thinking mode), and keeps the reply for the next turn. When the conversation outgrows the
model's context the oldest turns are dropped, and the screen says so.

Keys: line editing and history (readline) on a terminal; Ctrl-C stops a reply (the conversation
stays) or clears the line being typed; Ctrl-D leaves. Commands: see COMMANDS.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys

from ..errors import UserError
from .common import (
    add_engine_args,
    check_text,
    deferred_interrupt,
    engine_kwargs,
    non_negative_int,
    resolve_model,
)

DIM, RESET = "\033[2m", "\033[0m"
COMMANDS = {
    "/help": "list the commands",
    "/reset": "start a new conversation (the --system prompt stays)",
    "/exit": "leave (also /quit, or Ctrl-D)",
}
ALIASES = {"/quit": "/exit"}
COMMAND = re.compile(r"/\w+")  # a line whose first word is this is a command; "//..." sends "/..."


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="interactive terminal chat with a model (default: the shipped demo)",
                       description="Chat with a model in DeepSeek-V4's chat format, streaming the replies. "
                                   "Ctrl-C stops a reply, Ctrl-D leaves, /help lists the commands.")
    p.add_argument("--model", default="demo", help="checkpoint folder with tokenizer.json, or a shipped model")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--thinking", action="store_true", help="thinking mode: the model reasons inside <think>")
    p.add_argument("--max-new-tokens", "--max-tokens", dest="max_new_tokens", type=non_negative_int, default=256,
                   help="tokens per reply at most")
    p.add_argument("--temperature", type=float, default=0.7, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling: keep the smallest set reaching p")
    p.add_argument("--seed", type=int, default=None, help="seed of the sampling (default: random)")
    add_engine_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, stdin=None, stdout=None) -> int:
    from ..engine import LLM, SamplingParams

    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    if args.tp or args.dp:
        raise UserError("chat runs in one process; across processes use `torchrun ... -m trillion serve --tp T "
                        "--dp D` and a chat client (docs/distributed.md)")
    kwargs = engine_kwargs(args)
    llm = LLM(resolve_model(args.model), dtype=args.torch_dtype, **kwargs)
    if llm.tokenizer is None:
        raise UserError("chat needs a model folder with tokenizer.json")
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                            top_p=args.top_p, seed=args.seed)
    system = [{"role": "system", "content": args.system}] if args.system else []
    history = list(system)
    read = line_reader(stdin, stdout)
    stdout.write("trillion chat: /help lists the commands; Ctrl-C stops a reply, Ctrl-D leaves.\n")
    while True:
        try:
            line = read("you> ")
        except KeyboardInterrupt:  # clears the line being typed
            stdout.write("\n")
            continue
        except EOFError:
            stdout.write("\n")
            return 0
        text = line.strip()
        if COMMAND.match(text) and not text.startswith("//"):
            name = ALIASES.get(text.split()[0], text.split()[0])
            if name == "/exit":
                return 0
            if name == "/reset":
                history = list(system)
                stdout.write("(new conversation)\n")
            elif name == "/help":
                stdout.write(help_text())
            else:
                stdout.write(f"unknown command {name}; /help lists the commands (start a message with // "
                             "to send one that begins with /)\n")
            continue
        if not text:
            continue
        message = line[1:] if text.startswith("//") else line
        trial = [*history, {"role": "user", "content": message}]
        try:
            check_text(message, "the message")
            ids, dropped = fit_context(llm, trial, len(system), params.max_new_tokens, args.thinking)
        except UserError as e:  # the conversation stays as it was
            stdout.write(f"error: {e}\n")
            continue
        history = trial
        if dropped:
            stdout.write(f"(the conversation outgrew the context of {llm.engine.max_model_len} tokens: dropped "
                         f"the oldest {dropped} message{'s' if dropped > 1 else ''}; /reset starts over)\n")
        stdout.write("assistant> ")
        reply = respond(llm, ids, params, args.thinking, stdout)
        if reply is None:  # the engine refused it; the message goes too
            history.pop()
        else:
            history.append(reply)


def help_text() -> str:
    rows = [f"  {name:<8} {what}\n" for name, what in COMMANDS.items()]
    return ("commands:\n" + "".join(rows) + "Ctrl-C stops a reply or clears the line; to send a message that "
            "starts with /, type // in front.\n")


def line_reader(stdin, stdout):
    """`read(prompt) -> line`, raising EOFError at the end. On a terminal: `input` with readline (line
    editing, arrow keys, history of this session). Undecodable bytes come through as surrogates, so
    check_text can name them instead of the reader failing."""
    if stdin is sys.stdin and hasattr(stdin, "reconfigure"):
        stdin.reconfigure(errors="surrogateescape")
    if stdin is sys.stdin and stdout is sys.stdout and stdin.isatty():
        with contextlib.suppress(ImportError):  # not on every platform; input() works without it
            import readline  # noqa: F401 (importing it gives input() line editing and history)
        return input

    def read(prompt: str) -> str:
        stdout.write(prompt)
        stdout.flush()
        line = stdin.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")

    return read


def fit_context(llm, history: list[dict], keep: int, max_new_tokens: int, thinking: bool) -> tuple[list[int], int]:
    """The prompt ids of `history` with room for the reply: the oldest messages after the first `keep`
    (the system prompt) are dropped from `history` until it fits. Returns (ids, messages dropped)."""
    from ..chat.encoding import encode_messages

    limit, dropped = llm.engine.max_model_len, 0
    while True:
        ids = llm.encode(encode_messages(history, thinking=thinking))
        if len(ids) + max_new_tokens <= limit:
            return ids, dropped
        if len(history) - keep <= 1:
            raise UserError(f"the message makes a prompt of {len(ids)} tokens; with room for a reply of "
                            f"{max_new_tokens} (--max-new-tokens) it exceeds the context of {limit} tokens")
        # drop the oldest exchange: its user message and what answered it, up to the next user message
        end = keep + 1
        while end < len(history) - 1 and history[end]["role"] != "user":
            end += 1
        dropped += end - keep
        del history[keep:end]


def respond(llm, ids: list[int], params, thinking: bool, stdout) -> dict | None:
    """Stream one reply; Ctrl-C stops it between two engine steps and keeps what was said.
    Returns the assistant message, or None when the engine refused the request (the error printed)."""
    from ..chat.dsml import OutputParser

    color = stdout.isatty()
    parser = OutputParser(thinking=thinking)
    reasoning = content = ""
    stopped = False
    try:
        with deferred_interrupt() as interrupted, contextlib.closing(llm.stream(ids, params)) as chunks:
            for chunk in chunks:
                d = parser.feed(chunk.text)
                if d.reasoning:
                    reasoning += d.reasoning
                    stdout.write(f"{DIM}{d.reasoning}{RESET}" if color else d.reasoning)
                if d.content:
                    content += d.content
                    stdout.write(d.content)
                stdout.flush()
                if interrupted[0]:
                    stopped = True
                    break
    except UserError as e:
        stdout.write(f"\nerror: {e}\n")
        return None
    except BaseException:
        stdout.write("\n")  # the error (or a second Ctrl-C) is reported on a line of its own
        raise
    tail = parser.finish()
    content += tail.content
    stdout.write(tail.content + (" [stopped]" if stopped else "") + "\n")
    reply = {"role": "assistant", "content": content}
    if reasoning:
        reply["reasoning_content"] = reasoning
    return reply
