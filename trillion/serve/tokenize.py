"""vLLM's tokenizer endpoints, so that clients can count and build prompts with the server's own
tokenizer and chat format:

    POST /tokenize     {"prompt", "add_special_tokens": true} or {"messages", "tools", ...}
                       -> {"count", "max_model_len", "tokens", "token_strs"}
    POST /detokenize   {"tokens"} -> {"prompt"}
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI
from pydantic import BaseModel, Field, ValidationError

from .errors import validation_error
from .protocol import Message, Strict, Tool, thinking_mode
from .responses import token_text
from .service import Service


class TokenizeText(Strict):
    model: str | None = None
    prompt: str
    add_special_tokens: bool = True  # True: the ids /v1/completions runs for this prompt
    return_token_strs: bool = False


class TokenizeChat(Strict):
    model: str | None = None
    messages: Annotated[list[Message], Field(min_length=1)]
    tools: list[Tool] | None = Field(None, max_length=128)
    add_generation_prompt: bool = True  # the V4 prompt always ends with the assistant's turn
    add_special_tokens: bool = False  # the chat format has its own BOS
    thinking: bool | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    return_token_strs: bool = False


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class Detokenize(Strict):
    model: str | None = None
    tokens: list[int]


class DetokenizeResponse(BaseModel):
    prompt: str


def add_tokenizer_routes(app: FastAPI, service: Service) -> None:
    @app.post("/tokenize")
    async def tokenize(body: dict[str, Any]) -> TokenizeResponse:
        try:  # vLLM's two shapes: chat messages, or a text prompt
            req = (TokenizeChat if "messages" in body else TokenizeText).model_validate(body)
        except ValidationError as e:
            raise validation_error(list(e.errors())) from None
        service.check_model(req.model)
        if isinstance(req, TokenizeText):
            ids = (service.text_prompt(req.prompt) if req.add_special_tokens
                   else service.need_tokenizer("a text prompt").encode(req.prompt))
        else:
            tools = [t.model_dump(exclude_none=True) for t in req.tools] if req.tools else None
            ids = service.chat_prompt([m.model_dump(exclude_none=True) for m in req.messages], tools=tools,
                                      thinking=thinking_mode(req.thinking, req.chat_template_kwargs, None))
        strs = [token_text(service, i) for i in ids] if req.return_token_strs else None
        return TokenizeResponse(count=len(ids), max_model_len=service.max_model_len, tokens=ids, token_strs=strs)

    @app.post("/detokenize")
    async def detokenize(req: Detokenize) -> DetokenizeResponse:
        service.check_model(req.model)
        ids = service.text_prompt(req.tokens)  # checks the ids are in the vocabulary
        return DetokenizeResponse(prompt=service.need_tokenizer("detokenize").decode(ids))
