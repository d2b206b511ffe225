"""The Python API the HTTP server adapts: text or chat in, streams of text, reasoning and tool
calls out, over one engine shared by every caller (continuous batching).

    service = Service(engine, tokenizer, model_name="v4-demo")
    service.start()
    ids = service.chat_prompt(messages, tools=tools, thinking=True)
    gen = await service.generate(ids, SamplingParams(max_new_tokens=64), chat=ChatMode(thinking=True, tools=True))
    async for deltas in gen:            # one list per engine step: ChoiceDelta per choice that moved
        ...
    result = gen.choices[0]            # text / reasoning / content / tool_calls / token_ids / finish_reason

Layers: the engine speaks token ids (`EngineWorker` owns it in its thread); `TextStream` turns
ids into text with stop strings; the chat `OutputParser` splits text into reasoning, content and
tool calls. A generation that is dropped before its end must be `abort()`ed: its sequences then
give their state back at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..chat import OutputParser, ToolCall, encode_messages
from ..checkpoint.side_files import DEFAULT_MAX_NEW_TOKENS
from ..engine.engine import Engine
from ..engine.sampling import SamplingParams
from ..tokenizer import TextStream, Tokenizer
from .errors import APIError, NotFound, RequestError
from .metrics import Metrics
from .worker import EngineWorker, Ticket

# New tokens of a chat answer when neither the request nor the model's generation_config.json says:
# the number trillion writes into generation_config.json (DeepSeek's API default for max_tokens).
DEFAULT_MAX_TOKENS = DEFAULT_MAX_NEW_TOKENS


@dataclass
class ChatMode:
    """How to read a chat output: thinking mode (reasoning first), and whether to parse tool calls."""

    thinking: bool = False
    tools: bool = False


@dataclass
class ChoiceDelta:
    """What one choice gained in one engine step."""

    index: int
    text: str = ""  # completions: the new text
    reasoning: str = ""  # chat
    content: str = ""  # chat
    tool_calls: list[tuple[int, str | None, str | None, str]] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[dict] = field(default_factory=list)  # the engine's {"token", "logprob", "top"}
    prompt_logprobs: list[dict | None] | None = None  # in the choice's first delta, when asked for
    finish_reason: str | None = None


@dataclass
class Choice:
    """One choice so far (complete once finish_reason is set)."""

    index: int
    stream: TextStream
    parser: OutputParser | None
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[dict] = field(default_factory=list)
    prompt_logprobs: list[dict | None] | None = None  # one per prompt token (the first None), when asked for
    finish_reason: str | None = None

    @property
    def reasoning(self) -> str:
        return self.parser.reasoning if self.parser else ""

    @property
    def content(self) -> str:
        return self.parser.content if self.parser else self.text

    @property
    def tool_calls(self) -> list[ToolCall]:
        return self.parser.calls if self.parser else []


class Generation:
    """One request's choices as they come; iterate for per-step deltas, or `await collect()`."""

    def __init__(self, worker: EngineWorker, ticket: Ticket, choices: list[Choice]):
        self.worker, self.ticket, self.choices = worker, ticket, choices
        self.prompt_tokens = len(ticket.prompt_ids)

    @property
    def done(self) -> bool:
        return all(c.finish_reason is not None for c in self.choices)

    @property
    def completion_tokens(self) -> int:
        return sum(len(c.token_ids) for c in self.choices)

    def __aiter__(self):
        return self

    async def __anext__(self) -> list[ChoiceDelta]:
        while not self.done:
            deltas = self._apply(await self.ticket.next())
            if deltas:
                return deltas
        raise StopAsyncIteration

    async def collect(self) -> list[Choice]:
        async for _ in self:
            pass
        return self.choices

    def abort(self) -> None:
        """Cancel what is still running (a client went away); its state returns to the pool now."""
        if not self.done:
            for c in self.choices:
                if c.finish_reason is None:
                    c.finish_reason = "abort"
            self.worker.abort(self.ticket)

    def _apply(self, items) -> list[ChoiceDelta]:
        out: dict[int, ChoiceDelta] = {}
        stopped = []
        for it in items:
            c = self.choices[it.index]
            if c.finish_reason is not None:  # ended already (a stop string earlier in this step, an abort)
                continue
            d = out.setdefault(it.index, ChoiceDelta(it.index))
            if it.prompt_logprobs is not None:
                c.prompt_logprobs = d.prompt_logprobs = it.prompt_logprobs
            text = ""
            if it.token_id is not None:
                c.token_ids.append(it.token_id)
                d.token_ids.append(it.token_id)
                if it.logprob is not None:
                    c.logprobs.append(it.logprob)
                    d.logprobs.append(it.logprob)
                text = c.stream.push(it.token_id)
            if c.stream.stopped:
                reason = "stop"
                if it.finish_reason is None:
                    stopped.append(it.index)
            else:
                reason = it.finish_reason
                if reason is not None:
                    text += c.stream.finish()
                    if c.stream.stopped:  # a stop string in the text held back until the end
                        reason = "stop"
            self._text(c, d, text)
            if reason is not None:
                if c.parser is not None:
                    self._add(d, c.parser.finish())
                    if c.parser.calls and reason == "stop":
                        reason = "tool_calls"
                c.finish_reason = d.finish_reason = reason
        if stopped:
            self.worker.abort(self.ticket, stopped)
        return [d for d in out.values() if d.text or d.reasoning or d.content or d.tool_calls or d.token_ids
                or d.finish_reason or d.prompt_logprobs is not None]

    def _text(self, c: Choice, d: ChoiceDelta, text: str) -> None:
        if not text:
            return
        c.text += text
        if c.parser is None:
            d.text += text
        else:
            self._add(d, c.parser.feed(text))

    @staticmethod
    def _add(d: ChoiceDelta, pd) -> None:
        d.reasoning += pd.reasoning
        d.content += pd.content
        d.tool_calls += pd.tool_calls


class Service:
    """`default_max_tokens` caps a chat answer whose request sets no limit (the model folder's
    generation_config.json `max_new_tokens` when `load_service` finds one, else DEFAULT_MAX_TOKENS)."""

    def __init__(self, engine: Engine, tokenizer: Tokenizer | None, *, model_name: str,
                 max_queue: int = 64, metrics: Metrics | None = None,
                 default_max_tokens: int = DEFAULT_MAX_TOKENS):
        if default_max_tokens < 1:
            raise ValueError(f"default_max_tokens = {default_max_tokens} must be >= 1")
        self.engine, self.tokenizer, self.model_name = engine, tokenizer, model_name
        self.default_max_tokens = default_max_tokens
        self.metrics = metrics or Metrics()
        self.worker = EngineWorker(engine, self.metrics, max_queue=max_queue)
        cfg = engine.cfg
        self.hidden = {cfg.eos_token_id, cfg.bos_token_id}  # produce no text

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len

    def check_model(self, model: str | None) -> None:
        """A request's `model`: the served one, or None (one model is served)."""
        if model is not None and model != self.model_name:
            raise NotFound(f"the model {model!r} does not exist; this server serves {self.model_name!r}",
                           param="model", code="model_not_found")

    def start(self) -> None:
        self.worker.start()

    def close(self) -> None:
        self.worker.stop()

    # ------------------------------------------------------------------ prompts

    def need_tokenizer(self, what: str) -> Tokenizer:
        if self.tokenizer is None:
            raise RequestError(f"{what} needs a tokenizer, and this model has none (serve a checkpoint folder "
                               "with tokenizer.json, or pass --tokenizer); send token ids instead", param="prompt")
        return self.tokenizer

    def text_prompt(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            ids = self.need_tokenizer("a text prompt").encode_prompt(prompt, bos_token_id=self.engine.cfg.bos_token_id)
            if not ids:
                raise RequestError("the prompt is empty", param="prompt")
            return ids
        bad = [t for t in prompt if not 0 <= t < self.engine.cfg.vocab_size]
        if bad:
            raise RequestError(f"prompt token ids out of range [0, {self.engine.cfg.vocab_size}): {bad[:5]}",
                               param="prompt")
        return list(prompt)

    def chat_prompt(self, messages: list[dict], *, tools: list[dict] | None = None, thinking: bool = False,
                    reasoning_effort: str | None = None, response_format: dict | None = None) -> list[int]:
        """OpenAI messages -> the V4 chat prompt's token ids. OpenAI's "developer" role is a system
        turn here (DeepSeek's own developer role is internal to its search agent); tools and a
        response format go on the first system turn (one is added when there is none)."""
        tok = self.need_tokenizer("chat")
        msgs = [dict(m, role="system") if m["role"] == "developer" else dict(m) for m in messages]
        if msgs[-1]["role"] not in ("user", "tool"):
            raise RequestError(f"the last message must be from the user or a tool, not {msgs[-1]['role']!r}",
                               param=f"messages[{len(msgs) - 1}].role")
        if tools or (response_format and response_format.get("type") != "text"):
            if msgs[0]["role"] != "system":
                msgs.insert(0, {"role": "system", "content": ""})
            if tools:
                msgs[0]["tools"] = tools
            if response_format and response_format.get("type") != "text":
                msgs[0]["response_format"] = response_format
        try:
            text = encode_messages(msgs, thinking=thinking, reasoning_effort="max" if reasoning_effort == "max" else None)
        except ValueError as e:
            raise RequestError(str(e), param="messages") from None
        return tok.encode(text)

    def tokens_left(self, prompt_ids: list[int]) -> int:
        return self.max_model_len - len(prompt_ids)

    def default_limit(self, prompt_ids: list[int]) -> int:
        """New tokens for a request that names no limit: the default cap, within the context left."""
        return max(min(self.default_max_tokens, self.tokens_left(prompt_ids)), 1)

    # ------------------------------------------------------------------ generation

    async def generate(self, prompt_ids: list[int], params: SamplingParams, *, chat: ChatMode | None = None,
                       stop: list[str] | None = None) -> Generation:
        """Queue a request and wait until the engine has taken it (raises RequestError or QueueFull).

        `stop` strings are matched here on the text (the engine gets token-level stops only)."""
        total = len(prompt_ids) + params.max_new_tokens
        if total > self.max_model_len:
            raise RequestError(
                f"this model's maximum context length is {self.max_model_len} tokens; the request needs {total} "
                f"({len(prompt_ids)} in the prompt, {params.max_new_tokens} to generate): shorten the prompt or "
                "lower max_tokens", param="messages" if chat else "prompt", code="context_length_exceeded")
        if params.n > self.engine.pool.max_seqs:
            raise RequestError(f"n = {params.n} samples is more than this server runs at once "
                               f"(max batch {self.engine.pool.max_seqs})", param="n")
        if stop and self.tokenizer is None:
            raise RequestError("stop strings need a tokenizer; use stop_token_ids", param="stop")
        ticket = self.worker.submit(prompt_ids, params)
        try:
            await ticket.accepted
        except APIError:
            raise
        except ValueError as e:  # the engine refused it (e.g. it can never fit the state pool)
            raise RequestError(str(e)) from None
        except BaseException:
            self.worker.abort(ticket)  # cancelled while queued: do not leave it running
            raise
        hidden = self.hidden | set(params.stop_token_ids)
        choices = [
            Choice(i, TextStream(self.tokenizer, hidden=hidden, stop=stop, skip_special_tokens=chat is None),
                   OutputParser(thinking=chat.thinking, tools=chat.tools) if chat else None)
            for i in range(params.n)
        ]
        return Generation(self.worker, ticket, choices)
