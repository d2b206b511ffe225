"""`trillion chat`: an interactive terminal chat, streaming, in DeepSeek-V4's chat format.

Each turn renders the whole conversation with `trillion.chat.encoding.encode_messages`, streams the
assistant's reply through `LLM.stream` and `trillion.chat.dsml.OutputParser` (reasoning shown dimmed
in thinking mode), and keeps the reply for the next turn. Commands: /reset, /exit (or Ctrl-D).
"""

from __future__ import annotations

import argparse
import sys

from .common import add_engine_args, engine_kwargs, resolve_model

DIM, RESET = "\033[2m", "\033[0m"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="interactive terminal chat with a model (default: the shipped demo)",
                       description="Chat with a model in DeepSeek-V4's chat format, streaming the replies.")
    p.add_argument("--model", help="checkpoint folder with tokenizer.json (default: the shipped demo model)")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--thinking", action="store_true", help="thinking mode: the model reasons inside <think>")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=None)
    add_engine_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, stdin=None, stdout=None) -> int:
    from ..chat.dsml import OutputParser
    from ..chat.encoding import encode_messages
    from ..engine import LLM, SamplingParams

    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    kwargs = engine_kwargs(args)
    llm = LLM(resolve_model(args.model), dtype=args.torch_dtype, **kwargs)
    if llm.tokenizer is None:
        raise ValueError("chat needs a model folder with tokenizer.json")
    color = stdout.isatty()
    history: list[dict] = [{"role": "system", "content": args.system}] if args.system else []
    stdout.write("trillion chat: /reset clears the conversation, /exit or Ctrl-D leaves.\n")
    while True:
        stdout.write("you> ")
        stdout.flush()
        line = stdin.readline()
        if not line:
            stdout.write("\n")
            return 0
        text = line.rstrip("\n")
        if text.strip() in ("/exit", "/quit"):
            return 0
        if text.strip() == "/reset":
            history = history[:1] if args.system else []
            continue
        if not text.strip():
            continue
        history.append({"role": "user", "content": text})
        prompt = llm.tokenizer.encode(encode_messages(history, thinking=args.thinking))
        params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                top_p=args.top_p, seed=args.seed)
        parser = OutputParser(thinking=args.thinking)
        stdout.write("assistant> ")
        reasoning = content = ""
        for chunk in llm.stream(prompt, params):
            d = parser.feed(chunk.text)
            if d.reasoning:
                reasoning += d.reasoning
                stdout.write(f"{DIM}{d.reasoning}{RESET}" if color else d.reasoning)
            if d.content:
                content += d.content
                stdout.write(d.content)
            stdout.flush()
        tail = parser.finish()
        content += tail.content
        stdout.write(tail.content + "\n")
        reply = {"role": "assistant", "content": content}
        if reasoning:
            reply["reasoning_content"] = reasoning
        history.append(reply)
