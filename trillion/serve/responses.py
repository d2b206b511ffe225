"""Python API results -> OpenAI responses: whole answers, and the server-sent events of a stream.

Completions: one chunk per choice per engine step that showed something; with echo, a chunk
with the prompt first (with logprobs, once the prefill has scored it). Chat: a first chunk
with the role, then reasoning_content / content / tool_calls deltas (a tool call's id and name
in its first delta, its JSON arguments in pieces), the finish reason, and with
`stream_options.include_usage` a last chunk with no choices and the usage. Every choice of every
chunk carries `finish_reason` (null but in its last chunk) and `logprobs`, as OpenAI's do.

Prompt log-probabilities come in two shapes: OpenAI's legacy `echo` + `logprobs` (the prompt's
tokens first in `logprobs`, the first token's entry null) and vLLM's `prompt_logprobs` (per
prompt position null or {token id: {logprob, rank, decoded_token}}: the prompt token, then the
top alternatives).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator

from .protocol import (
    ChatChoice,
    ChatChunk,
    ChatChunkChoice,
    ChatDelta,
    ChatLogprobs,
    ChatMessage,
    ChatRequest,
    ChatResponse,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    FunctionCallOut,
    PromptLogprob,
    TokenLogprob,
    ToolCallOut,
    TopLogprob,
    Usage,
)
from .service import ChoiceDelta, Generation, Service
from .text import token_bytes


def sse_data(model) -> str:
    """One event: fields that are None are left out, except each choice's finish_reason and logprobs."""
    data = model.model_dump(exclude_none=True)
    for choice in data.get("choices", []):
        choice.setdefault("logprobs", None)
        choice.setdefault("finish_reason", None)
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def merged(gens: list[Generation]) -> AsyncIterator[tuple[int, list[ChoiceDelta]]]:
    """(generation number, deltas) from several generations as they come."""
    if len(gens) == 1:
        async for deltas in gens[0]:
            yield 0, deltas
        return
    q: asyncio.Queue = asyncio.Queue()

    async def pump(k, g):
        try:
            async for deltas in g:
                await q.put((k, deltas))
        except Exception as e:  # noqa: BLE001 - handed to the consumer
            await q.put((k, e))
        await q.put((k, None))

    tasks = [asyncio.ensure_future(pump(k, g)) for k, g in enumerate(gens)]
    try:
        left = len(gens)
        while left:
            k, item = await q.get()
            if item is None:
                left -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield k, item
    finally:
        for t in tasks:
            t.cancel()


def total_usage(gens: list[Generation]) -> Usage:
    p = sum(g.prompt_tokens for g in gens)
    c = sum(g.completion_tokens for g in gens)
    return Usage(prompt_tokens=p, completion_tokens=c, total_tokens=p + c)



class CompletionFormat:
    def __init__(self, service: Service, req: CompletionRequest, prompts: list, gens: list[Generation]):
        self.s, self.req, self.prompts, self.gens = service, req, prompts, gens
        self.id, self.created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

    def _logprobs(self, entries: list[tuple[int, dict | None]], offset: int) -> tuple[CompletionLogprobs, int]:
        """(token, engine logprob entry or None) pairs -> OpenAI's legacy logprobs, and the offset after them."""
        top_n = self.req.logprobs
        out = CompletionLogprobs(top_logprobs=[] if top_n else None)
        for token, lp in entries:
            text = token_text(self.s, token)
            out.tokens.append(text)
            out.token_logprobs.append(None if lp is None else lp["logprob"])
            out.text_offset.append(offset)
            offset += len(text)
            if out.top_logprobs is not None:
                top: dict[str, float] | None = None
                if lp is not None:
                    top = {}
                    for t, v in lp["top"][:top_n]:  # keyed by text: tokens that print alike keep the best
                        top.setdefault(token_text(self.s, t), v)
                out.top_logprobs.append(top)
        return out, offset

    def _prompt_entries(self, k: int, scores: list | None) -> list[tuple[int, dict | None]]:
        return list(zip(self.gens[k].ticket.prompt_ids, scores or []))

    def _choice_logprobs(self, k: int, c) -> CompletionLogprobs | None:
        if self.req.logprobs is None:
            return None
        entries = self._prompt_entries(k, c.prompt_logprobs) if self.req.echo else []
        return self._logprobs(entries + [(lp["token"], lp) for lp in c.logprobs], 0)[0]

    def _prompt_logprobs(self, k: int, c) -> list[dict[str, PromptLogprob] | None] | None:
        """vLLM's prompt_logprobs: the prompt token's own entry, then the top alternatives."""
        top_n = self.req.prompt_logprobs
        if top_n is None:
            return None
        out: list[dict[str, PromptLogprob] | None] = []
        for token, lp in self._prompt_entries(k, c.prompt_logprobs):
            if lp is None:
                out.append(None)
                continue
            entry = {str(token): PromptLogprob(logprob=lp["logprob"], rank=lp["rank"],
                                               decoded_token=token_text(self.s, token))}
            for rank, (t, v) in enumerate(lp["top"][:top_n], 1):
                entry.setdefault(str(t), PromptLogprob(logprob=v, rank=rank, decoded_token=token_text(self.s, t)))
            out.append(entry)
        return out

    def _echo(self, k: int) -> str:
        if not self.req.echo:
            return ""
        p = self.prompts[k]
        return p if isinstance(p, str) else (self.s.tokenizer.decode(p) if self.s.tokenizer else "")

    def response(self) -> CompletionResponse:
        n, choices = self.req.n, []
        for k, g in enumerate(self.gens):
            for c in g.choices:
                choices.append(CompletionChoice(
                    index=k * n + c.index, text=self._echo(k) + c.text, finish_reason=c.finish_reason,
                    logprobs=self._choice_logprobs(k, c), prompt_logprobs=self._prompt_logprobs(k, c),
                    token_ids=c.token_ids if self.req.return_token_ids else None))
        return CompletionResponse(id=self.id, created=self.created, model=self.s.model_name, choices=choices,
                                  usage=total_usage(self.gens))

    async def stream(self) -> AsyncIterator[str]:
        n = self.req.n
        offsets: dict[int, int] = {}
        scored_echo = self.req.echo and self.req.logprobs is not None  # the echo waits for the prompt's scores
        if self.req.echo and not scored_echo:
            for k in range(len(self.gens)):
                for i in range(n):
                    yield sse_data(self._chunk([CompletionChoice(index=k * n + i, text=self._echo(k))]))
        async for k, deltas in merged(self.gens):
            for d in deltas:
                idx = k * n + d.index
                if scored_echo and d.prompt_logprobs is not None:
                    lps, offsets[idx] = self._logprobs(self._prompt_entries(k, d.prompt_logprobs), 0)
                    yield sse_data(self._chunk([CompletionChoice(index=idx, text=self._echo(k), logprobs=lps)]))
                if not (d.text or d.finish_reason or d.logprobs or self.req.return_token_ids):
                    continue
                off = offsets.get(idx, 0)
                lps = None
                if self.req.logprobs is not None:
                    lps = self._logprobs([(lp["token"], lp) for lp in d.logprobs], off)[0]
                choice = CompletionChoice(index=idx, text=d.text, finish_reason=d.finish_reason, logprobs=lps,
                                          token_ids=d.token_ids if self.req.return_token_ids else None)
                offsets[idx] = off + len(d.text)
                yield sse_data(self._chunk([choice]))
        if self.req.stream_options and self.req.stream_options.include_usage:
            yield sse_data(self._chunk([], usage=total_usage(self.gens)))

    def _chunk(self, choices, usage=None) -> CompletionResponse:
        return CompletionResponse(id=self.id, created=self.created, model=self.s.model_name, choices=choices,
                                  usage=usage)


class ChatFormat:
    def __init__(self, service: Service, req: ChatRequest, gen: Generation):
        self.s, self.req, self.gen = service, req, gen
        self.id, self.created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def _logprobs(self, lps: list[dict]) -> ChatLogprobs | None:
        if not self.req.logprobs:
            return None
        return ChatLogprobs(content=[
            TokenLogprob(**_top(self.s, lp["token"], lp["logprob"]),
                         top_logprobs=[TopLogprob(**_top(self.s, t, v)) for t, v in lp["top"]])
            for lp in lps
        ])

    def response(self) -> ChatResponse:
        choices = []
        for c in self.gen.choices:
            calls = [ToolCallOut(id=t.id, type="function", function=FunctionCallOut(name=t.name, arguments=t.arguments))
                     for t in c.tool_calls]
            msg = ChatMessage(content=c.content if c.content or not calls else None,
                              reasoning_content=c.reasoning if self.req.use_thinking else None, tool_calls=calls or None)
            choices.append(ChatChoice(index=c.index, message=msg, finish_reason=c.finish_reason,
                                      logprobs=self._logprobs(c.logprobs),
                                      token_ids=c.token_ids if self.req.return_token_ids else None))
        return ChatResponse(id=self.id, created=self.created, model=self.s.model_name, choices=choices,
                            usage=total_usage([self.gen]))

    async def stream(self) -> AsyncIterator[str]:
        for i in range(self.req.n):
            yield sse_data(self._chunk([ChatChunkChoice(index=i, delta=ChatDelta(role="assistant", content=""))]))
        async for _, deltas in merged([self.gen]):
            for d in deltas:
                delta = ChatDelta(content=d.content or None, reasoning_content=d.reasoning or None,
                                  tool_calls=_tool_call_pieces(d.tool_calls) or None)
                if not (delta.content or delta.reasoning_content or delta.tool_calls or d.finish_reason
                        or (d.logprobs and self.req.logprobs) or self.req.return_token_ids):
                    continue  # tokens that show nothing yet (held back, or the end token)
                yield sse_data(self._chunk([ChatChunkChoice(
                    index=d.index, delta=delta, finish_reason=d.finish_reason, logprobs=self._logprobs(d.logprobs),
                    token_ids=d.token_ids if self.req.return_token_ids else None)]))
        if self.req.stream_options and self.req.stream_options.include_usage:
            yield sse_data(self._chunk([], usage=total_usage([self.gen])))

    def _chunk(self, choices, usage=None) -> ChatChunk:
        return ChatChunk(id=self.id, created=self.created, model=self.s.model_name, choices=choices, usage=usage)


def _tool_call_pieces(pieces: list[tuple[int, str | None, str | None, str]]) -> list[ToolCallOut]:
    """Parser pieces -> OpenAI stream tool-call deltas, one per call (its id and name in its first)."""
    out: list[ToolCallOut] = []
    for idx, cid, name, args in pieces:
        if out and out[-1].index == idx and cid is None:
            out[-1].function.arguments += args
        else:
            out.append(ToolCallOut(index=idx, id=cid, type="function" if cid else None,
                                   function=FunctionCallOut(name=name, arguments=args)))
    return out


def token_text(service: Service, token_id: int) -> str:
    if service.tokenizer is None:
        return f"token_id:{token_id}"
    return token_bytes(service.tokenizer, token_id).decode("utf-8", errors="replace")


def _top(service: Service, token_id: int, logprob: float) -> dict:
    raw = token_bytes(service.tokenizer, token_id) if service.tokenizer else b""
    return {"token": raw.decode("utf-8", errors="replace") if raw else f"token_id:{token_id}",
            "logprob": logprob, "bytes": list(raw)}
