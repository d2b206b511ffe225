"""The OpenAI wire format: request models (validated strictly: a wrong type or an unknown field is
a 400 naming it) and response models.

Beyond OpenAI's fields, requests accept vLLM-style extras: `top_k`, `min_p`,
`repetition_penalty`, `ignore_eos`, `stop_token_ids`, `return_token_ids` (each choice, and each
stream chunk, carries its token ids), `prompt_logprobs` (completions); chat requests accept
`thinking` (bool) next to `reasoning_effort` to choose DeepSeek's thinking mode, and vLLM's
`chat_template_kwargs` (its `thinking` / `enable_thinking` are honoured).

OpenAI fields that change nothing here (IGNORED: `user`, `store`, `metadata`, ...) are accepted
with any value; the server logs a warning the first time it sees each. `model` may be left out:
one model is served.
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

MAX_SEED = 2**62
TOOL_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
# OpenAI request fields accepted and not used (what they ask for does not exist here)
IGNORED = ("user", "store", "metadata", "service_tier", "parallel_tool_calls")
THINKING_KWARGS = ("thinking", "enable_thinking")  # chat_template_kwargs keys that choose the thinking mode


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# ---------------------------------------------------------------------- requests


class StreamOptions(Strict):
    include_usage: bool = False


class SamplingFields(Strict):
    model: str | None = None  # optional: the one served model
    max_tokens: int | None = Field(None, ge=0)  # 0: no new tokens (with echo and logprobs: scores the prompt)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=64)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    # IGNORED: accepted with any value, unused (a warning in the log)
    user: Any = None
    store: Any = None
    metadata: Any = None
    service_tier: Any = None
    parallel_tool_calls: Any = None  # the model may always call several tools
    # extensions (vLLM's names)
    top_k: int | None = Field(None, ge=-1)  # -1 or 0: off
    min_p: float | None = Field(None, ge=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0, le=10)
    ignore_eos: bool = False
    stop_token_ids: list[int] | None = Field(None, max_length=64)
    return_token_ids: bool = False

    @field_validator("stop")
    @classmethod
    def _stop(cls, v):
        stops = [v] if isinstance(v, str) else (v or [])
        if len(stops) > 16 or any(not s or len(s) > 256 for s in stops):
            raise ValueError("stop takes at most 16 non-empty strings of at most 256 characters")
        return stops or None

    @field_validator("logit_bias")
    @classmethod
    def _logit_bias(cls, v):
        if v:
            raise ValueError("logit_bias is not supported by this server")

    def ignored(self) -> list[str]:
        """The IGNORED fields this request set."""
        return [f for f in IGNORED if getattr(self, f) is not None]


class CompletionRequest(SamplingFields):
    prompt: Annotated[str | list[int] | list[str] | list[list[int]], Field(min_length=1)]
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=20)  # with echo: the prompt tokens' too
    prompt_logprobs: int | None = Field(None, ge=0, le=20)  # vLLM's: per choice, keyed by token id
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1)

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v):
        if isinstance(v, list) and v and isinstance(v[0], list) and not all(v):
            raise ValueError("a token-id prompt must not be empty")
        return v

    @field_validator("suffix")
    @classmethod
    def _suffix(cls, v):
        if v:
            raise ValueError("suffix is not supported by this server")
        return v

    @field_validator("best_of")
    @classmethod
    def _best_of(cls, v, info: ValidationInfo):
        if v is not None and v != info.data.get("n", 1):
            raise ValueError("best_of must equal n (or be left out): this server does not rank samples")
        return v

    @field_validator("prompt_logprobs")
    @classmethod
    def _prompt_logprobs(cls, v, info: ValidationInfo):
        if v is not None and info.data.get("stream"):
            raise ValueError("prompt_logprobs is not available with stream: true (echo with logprobs is)")
        return v

    @property
    def prompt_scores(self) -> int | None:
        """How many alternatives to score per prompt token (None: prompt tokens are not scored)."""
        asked = [k for k in (self.prompt_logprobs, self.logprobs if self.echo else None) if k is not None]
        return max(asked) if asked else None


class TextPart(Strict):
    type: Literal["text"]
    text: str


Content = str | list[TextPart]


class FunctionCall(Strict):
    name: str
    arguments: str


class ToolCallIn(Strict):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall
    index: int | None = None  # sent back by clients that reuse a streamed call; unused


class SystemMessage(Strict):
    role: Literal["system", "developer"]
    content: Content
    name: str | None = None


class UserMessage(Strict):
    role: Literal["user"]
    content: Content
    name: str | None = None


class AssistantMessage(Strict):
    role: Literal["assistant"]
    content: Content | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    name: str | None = None
    # what an OpenAI client sends back when a response message is reused: accepted, unused
    refusal: str | None = None
    annotations: list | None = None
    audio: dict | None = None
    function_call: dict | None = None


class ToolMessage(Strict):
    role: Literal["tool"]
    content: Content
    tool_call_id: str | None = None


Message = Annotated[SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")]


class FunctionDef(Strict):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        if not TOOL_NAME.match(v):
            raise ValueError("a function name is 1 to 64 letters, digits, '_', '.' or '-'")
        return v

    @field_validator("parameters")
    @classmethod
    def _schema(cls, v):
        """A JSON schema of an object: the arguments of a call are one JSON object."""
        if v is None:
            return v
        if v.get("type", "object") != "object":
            raise ValueError(f"parameters must be a JSON schema of type 'object', got type {v.get('type')!r}")
        props = v.get("properties", {})
        if not isinstance(props, dict) or not all(isinstance(p, dict) for p in props.values()):
            raise ValueError("parameters.properties must map each parameter name to a JSON schema object")
        req = v.get("required", [])
        if not isinstance(req, list) or not all(isinstance(r, str) for r in req):
            raise ValueError("parameters.required must be a list of parameter names")
        missing = [r for r in req if r not in props]
        if missing:
            raise ValueError(f"parameters.required names parameters that are not in properties: {missing}")
        return v


class Tool(Strict):
    type: Literal["function"]
    function: FunctionDef


def thinking_mode(thinking: bool | None, template_kwargs: dict | None, effort: str | None) -> bool:
    """`thinking` if given, else chat_template_kwargs' `thinking` / `enable_thinking`, else any
    reasoning_effort other than none / minimal."""
    if thinking is not None:
        return thinking
    for k in THINKING_KWARGS:
        if template_kwargs and k in template_kwargs:
            return template_kwargs[k]
    return effort not in (None, "none", "minimal")


class ChatRequest(SamplingFields):
    messages: Annotated[list[Message], Field(min_length=1)]
    tools: list[Tool] | None = Field(None, max_length=128)
    tool_choice: str | dict | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    max_completion_tokens: int | None = Field(None, ge=0)
    reasoning_effort: Literal[EFFORTS] | None = None  # type: ignore[valid-type]
    thinking: bool | None = None
    response_format: dict[str, Any] | None = None
    chat_template_kwargs: dict[str, Any] | None = None  # vLLM's; `thinking` / `enable_thinking` are used

    @field_validator("chat_template_kwargs")
    @classmethod
    def _template_kwargs(cls, v):
        for k in THINKING_KWARGS:
            if v and k in v and not isinstance(v[k], bool):
                raise ValueError(f"chat_template_kwargs.{k} must be true or false, got {v[k]!r}")
        return v

    @field_validator("tool_choice")
    @classmethod
    def _tool_choice(cls, v):
        if v is None or v in ("auto", "none"):
            return v
        raise ValueError("only tool_choice 'auto' and 'none' are supported: the server cannot force a call")

    @field_validator("response_format")
    @classmethod
    def _response_format(cls, v):
        if v is not None and v.get("type") not in ("text", "json_object", "json_schema"):
            raise ValueError("response_format.type must be 'text', 'json_object' or 'json_schema'")
        return v

    @field_validator("top_logprobs")
    @classmethod
    def _top_logprobs(cls, v, info: ValidationInfo):
        if v and not info.data.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs: true")
        return v

    @property
    def use_thinking(self) -> bool:
        return thinking_mode(self.thinking, self.chat_template_kwargs, self.reasoning_effort)

    def ignored(self) -> list[str]:
        extra = [f"chat_template_kwargs.{k}" for k in (self.chat_template_kwargs or {}) if k not in THINKING_KWARGS]
        return super().ignored() + extra


# ---------------------------------------------------------------------- responses


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "trillion"
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class CompletionLogprobs(BaseModel):
    """OpenAI's legacy shape; with echo the prompt tokens come first, the first of them scored None."""

    tokens: list[str] = []
    token_logprobs: list[float | None] = []
    top_logprobs: list[dict[str, float] | None] | None = None
    text_offset: list[int] = []


class PromptLogprob(BaseModel):
    """vLLM's entry for one candidate token of one prompt position."""

    logprob: float
    rank: int
    decoded_token: str


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None
    token_ids: list[int] | None = None
    prompt_logprobs: list[dict[str, PromptLogprob] | None] | None = None  # keyed by token id


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[TokenLogprob]


class FunctionCallOut(BaseModel):
    name: str | None = None
    arguments: str


class ToolCallOut(BaseModel):
    index: int | None = None  # stream chunks only
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallOut


class ChatMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallOut] | None = None


class ChatChoice(BaseModel):
    index: int
    message: ChatMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None
    token_ids: list[int] | None = None


class ChatResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallOut] | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None
    token_ids: list[int] | None = None


class ChatChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
