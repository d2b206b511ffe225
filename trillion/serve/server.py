"""Start a server: load a model into a `Service`, run the app under uvicorn (in the foreground for
`trillion serve`, or in a background thread for tests and benchmarks).

    service = load_service("path/to/checkpoint", max_batch=8)
    with ServerThread(create_app(service)) as url:      # "http://127.0.0.1:<free port>"
        ...
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import torch

from ..engine.engine import Engine
from ..tokenizer import Tokenizer
from .app import create_app
from .service import DEFAULT_MAX_TOKENS, Service

GENERATION_CONFIG = "generation_config.json"


def load_service(
    model: str | Path,
    *,
    tokenizer: str | Path | None = None,
    model_name: str | None = None,
    max_batch: int = 8,
    max_queue: int = 64,
    max_model_len: int | None = None,
    dtype: torch.dtype | None = None,
    seed: int = 0,
    default_max_tokens: int | None = None,
    engine=None,
    **engine_options,
) -> Service:
    """A checkpoint folder (its tokenizer.json is found next to it) or a flavor name (random
    weights, no tokenizer unless `tokenizer` is given) -> a Service. `engine_options` go to
    `Engine` (prefill_chunk, page_size, kv_cache_tokens, speculative, num_draft_tokens, compile);
    or `engine=` one built already (its model is served).

    `default_max_tokens` caps chat answers whose request sets no limit; None: the folder's
    generation_config.json `max_new_tokens`, else DEFAULT_MAX_TOKENS."""
    from ..checkpoint import load_model

    if default_max_tokens is None:
        default_max_tokens = generation_max_new_tokens(model) or DEFAULT_MAX_TOKENS

    if engine is not None:  # built already (trillion.parallel.DistributedEngine on rank 0)
        if engine_options or max_model_len is not None:
            raise ValueError(f"engine options go to the engine given: {sorted(engine_options)}")
        m = engine.model
    else:
        m = load_model(str(model), dtype=dtype, seed=seed).eval()
    tok = None
    if tokenizer is not None:
        tok = Tokenizer.from_file(tokenizer)
    elif Path(str(model)).is_dir():
        tok = Tokenizer.find(model)
    if tok is not None and tok.vocab_size > m.cfg.vocab_size:
        raise ValueError(f"the tokenizer has {tok.vocab_size} tokens but the model only {m.cfg.vocab_size}")
    # the engine speaks token ids: text is made above it, by the service
    if engine is None:
        engine = Engine(m, max_seqs=max_batch, max_model_len=max_model_len, **engine_options)
    name = model_name or (Path(str(model)).name if Path(str(model)).is_dir() else str(model))
    return Service(engine, tok, model_name=name, max_queue=max_queue, default_max_tokens=default_max_tokens)


def generation_max_new_tokens(model: str | Path) -> int | None:
    """`max_new_tokens` of a model folder's generation_config.json (None: no such file or key)."""
    path = Path(str(model)) / GENERATION_CONFIG
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text()).get("max_new_tokens")
    except (ValueError, AttributeError) as e:
        raise ValueError(f"{path}: not a JSON object ({e})") from None
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{path}: max_new_tokens must be an integer >= 1, got {value!r}")
    return value


def serve(service: Service, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          log_level: str = "info", **app_options) -> None:
    """Serve in the foreground until interrupted."""
    import uvicorn

    uvicorn.run(create_app(service, api_key=api_key, **app_options), host=host, port=port, log_level=log_level,
                timeout_graceful_shutdown=5)


class ServerThread:
    """uvicorn in a background thread on a free local port; a context manager giving the base URL."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = host, self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name="trillion-http")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> str:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not start")
            time.sleep(0.01)
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
