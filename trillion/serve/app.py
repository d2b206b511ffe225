"""The HTTP server: OpenAI-compatible routes over `Service` (a thin adapter: validate, call, format).

    GET  /health                 liveness (no API key needed)
    GET  /metrics                Prometheus text format
    GET  /version                {"version": trillion's}
    GET  /v1/models              the served model
    GET  /v1/models/{id}         the served model, or 404
    POST /v1/completions         text or token-id prompts; echo + logprobs score the prompt
    POST /v1/chat/completions    DeepSeek-V4 chat format, reasoning, tool calls
    POST /tokenize               vLLM's: text or chat messages -> the token ids the server runs
    POST /detokenize             vLLM's: token ids -> text

`stream: true` answers with server-sent events ending in `data: [DONE]`. A client that goes
away cancels its sequences (a stream when the next write fails or the disconnect arrives; a
non-streaming request when the disconnect arrives: it is answered 499, which nobody reads).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..engine.sampling import SamplingParams
from .errors import APIError, RequestError, error_body, sse_error, validation_error
from .gate import Gate
from .protocol import ChatRequest, CompletionRequest, ModelCard, ModelList
from .responses import ChatFormat, CompletionFormat
from .service import ChatMode, Generation, Service
from .tokenize import add_tokenizer_routes

MAX_BODY_BYTES = 16 * 2**20
# OpenAI's default for /v1/completions; chat defaults to Service.default_max_tokens (generation_config.json)
COMPLETIONS_DEFAULT_MAX_TOKENS = 16
SAMPLING_PARAM_NAMES = {"max_new_tokens": "max_tokens", "logprobs": "logprobs", "prompt_logprobs": "prompt_logprobs"}
log = logging.getLogger("trillion.serve")


def create_app(service: Service, *, api_key: str | None = None, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The FastAPI app; its lifespan starts and stops the service's engine thread."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        try:
            yield
        finally:
            service.close()

    app = FastAPI(title="trillion", lifespan=lifespan)
    app.state.service = service
    app.add_middleware(Gate, api_key=api_key, max_body_bytes=max_body_bytes, metrics=service.metrics)
    _handlers(app)
    add_tokenizer_routes(app, service)
    warned: set[str] = set()

    def check(req) -> None:
        """The model named (if any) is the served one; unused fields get a warning, once each."""
        service.check_model(req.model)
        new = [f for f in req.ignored() if f not in warned]
        if new:
            warned.update(new)
            log.warning("requests set %s, which this server accepts and ignores (logged once per field)",
                        ", ".join(new))

    @app.get("/health")
    async def health():
        ok = service.worker.thread.is_alive()
        return JSONResponse({"status": "ok" if ok else "engine thread stopped"}, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics():
        return Response(service.metrics.render(), media_type=service.metrics.content_type)

    @app.get("/version")
    async def version():
        from .. import __version__

        return {"version": __version__}

    def card() -> ModelCard:
        return ModelCard(id=service.model_name, max_model_len=service.max_model_len)

    @app.get("/v1/models")
    async def models() -> ModelList:
        return ModelList(data=[card()])

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> ModelCard:
        service.check_model(model_id)
        return card()

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request):
        check(req)
        prompts = req.prompt if isinstance(req.prompt, list) and not isinstance(req.prompt[0], int) else [req.prompt]
        ids = [service.text_prompt(p) for p in prompts]
        limit = COMPLETIONS_DEFAULT_MAX_TOKENS if req.max_tokens is None else req.max_tokens
        params = _sampling(req, limit, req.logprobs, prompt_logprobs=req.prompt_scores)
        gens = []
        try:
            for p in ids:
                gens.append(await service.generate(p, params, stop=req.stop))
        except BaseException:
            for g in gens:
                g.abort()
            raise
        fmt = CompletionFormat(service, req, prompts, gens)
        if req.stream:
            return _sse(fmt.stream(), gens)
        if not await _collect(request, gens):
            return Response(status_code=499)  # the client is gone; nobody reads this
        return fmt.response()

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest, request: Request):
        check(req)
        tools = [t.model_dump(exclude_none=True) for t in req.tools] if req.tools and req.tool_choice != "none" else None
        messages = [m.model_dump(exclude_none=True) for m in req.messages]
        ids = service.chat_prompt(messages, tools=tools, thinking=req.use_thinking,
                                  reasoning_effort=req.reasoning_effort, response_format=req.response_format)
        limit = next((v for v in (req.max_completion_tokens, req.max_tokens) if v is not None), None)
        params = _sampling(req, service.default_limit(ids) if limit is None else limit,
                           (req.top_logprobs or 0) if req.logprobs else None)
        gen = await service.generate(ids, params, chat=ChatMode(thinking=req.use_thinking, tools=bool(tools)),
                                     stop=req.stop)
        fmt = ChatFormat(service, req, gen)
        if req.stream:
            return _sse(fmt.stream(), [gen])
        if not await _collect(request, [gen]):
            return Response(status_code=499)
        return fmt.response()

    return app


# ---------------------------------------------------------------------- request -> Python API


def _sampling(req, max_new_tokens: int, logprobs: int | None, prompt_logprobs: int | None = None) -> SamplingParams:
    try:
        return SamplingParams(
            n=req.n, max_new_tokens=max_new_tokens,
            temperature=1.0 if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else req.top_p,
            top_k=max(req.top_k or 0, 0), min_p=req.min_p or 0.0,
            repetition_penalty=req.repetition_penalty or 1.0,
            presence_penalty=req.presence_penalty or 0.0, frequency_penalty=req.frequency_penalty or 0.0,
            seed=req.seed, stop_token_ids=list(req.stop_token_ids or []), ignore_eos=req.ignore_eos,
            logprobs=logprobs, prompt_logprobs=prompt_logprobs,
        )
    except ValueError as e:  # "SamplingParams.top_p = 0 must be in (0, 1]"
        field = str(e).split(" ", 1)[0].removeprefix("SamplingParams.")
        raise RequestError(str(e), param=SAMPLING_PARAM_NAMES.get(field, field)) from None


async def _collect(request: Request, gens: list[Generation]) -> bool:
    """Run generations to their end (True), or abort them if the client disconnects first (False)."""
    work = asyncio.ensure_future(asyncio.gather(*(g.collect() for g in gens)))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        finished = work.done()
        if not finished:  # the client left (or this handler was cancelled): stop the work, free the state
            work.cancel()
            for g in gens:
                g.abort()
            with contextlib.suppress(asyncio.CancelledError):
                await work  # a cancelled gather is done only once its children are
    if not finished:
        return False
    work.result()  # re-raise an engine failure
    return True


async def _disconnected(request: Request) -> None:
    while True:
        msg = await request.receive()
        if msg["type"] == "http.disconnect":
            return


def _sse(events: AsyncIterator[str], gens: list[Generation]) -> StreamingResponse:
    async def body():
        try:
            async for e in events:
                yield e
        except APIError as e:
            yield sse_error(e)
        except Exception as e:  # noqa: BLE001 - the status line is sent: report in the stream
            yield sse_error(APIError(f"generation failed: {e}"))
        finally:
            for g in gens:
                g.abort()  # a no-op when they ended; frees their state when the client left
        yield "data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


# ---------------------------------------------------------------------- errors


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, e: APIError):
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        err = validation_error(list(e.errors()))
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        msg = f"no route {request.method} {request.url.path}" if e.status_code in (404, 405) else str(e.detail)
        return JSONResponse(error_body(msg, kind), status_code=e.status_code, headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def crash(request: Request, e: Exception):
        return JSONResponse(error_body(f"internal error: {type(e).__name__}: {e}", "server_error"), status_code=500)
