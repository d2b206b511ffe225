"""The OpenAI wire format: request models (validated strictly: a wrong type or an unknown field is
a 400 naming it) and response models.

Beyond OpenAI's fields, requests accept vLLM-style extras: `top_k`, `min_p`,
`repetition_penalty`, `ignore_eos`, `stop_token_ids`, `return_token_ids` (each choice, and each
stream chunk, carries its token ids); chat requests accept `thinking` (bool) next to
`reasoning_effort` to choose DeepSeek's thinking mode.
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

MAX_SEED = 2**62
TOOL_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# ---------------------------------------------------------------------- requests


class StreamOptions(Strict):
    include_usage: bool = False


class SamplingFields(Strict):
    model: str
    max_tokens: int | None = Field(None, ge=1)
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
    user: str | None = None  # accepted, unused
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


class CompletionRequest(SamplingFields):
    prompt: Annotated[str | list[int] | list[str] | list[list[int]], Field(min_length=1)]
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=20)
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

    @field_validator("logprobs")
    @classmethod
    def _echo_logprobs(cls, v, info: ValidationInfo):
        if v is not None and info.data.get("echo"):
            raise ValueError("echo with logprobs is not supported (no prompt log-probabilities)")
        return v


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


class ChatRequest(SamplingFields):
    messages: Annotated[list[Message], Field(min_length=1)]
    tools: list[Tool] | None = Field(None, max_length=128)
    tool_choice: str | dict | None = None
    parallel_tool_calls: bool | None = None  # accepted; the model may always call several
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    max_completion_tokens: int | None = Field(None, ge=1)
    reasoning_effort: Literal[EFFORTS] | None = None  # type: ignore[valid-type]
    thinking: bool | None = None
    response_format: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None  # accepted, unused

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
        """Thinking mode: `thinking` if given, else any reasoning_effort other than none/minimal."""
        if self.thinking is not None:
            return self.thinking
        return self.reasoning_effort not in (None, "none", "minimal")


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
    tokens: list[str] = []
    token_logprobs: list[float] = []
    top_logprobs: list[dict[str, float]] | None = None
    text_offset: list[int] = []


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None
    token_ids: list[int] | None = None


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
