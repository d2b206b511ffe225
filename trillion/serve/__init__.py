"""An OpenAI-compatible server over the engine (continuous batching), with DeepSeek-V4's chat
format, reasoning and tool calls.

Layers, each usable alone: `EngineWorker` (the engine in its own thread, token ids only) ->
`Service` (text and chat above it: the Python API) -> `create_app` (HTTP, a thin adapter).

    trillion serve --model PATH_OR_FLAVOR [--port 8000] [--api-key KEY]
"""

from .app import create_app
from .errors import APIError, QueueFull, RequestError
from .metrics import Metrics
from .server import ServerThread, load_service, serve
from .service import ChatMode, Choice, ChoiceDelta, Generation, Service
from .worker import EngineWorker

__all__ = [
    "APIError",
    "ChatMode",
    "Choice",
    "ChoiceDelta",
    "EngineWorker",
    "Generation",
    "Metrics",
    "QueueFull",
    "RequestError",
    "ServerThread",
    "Service",
    "create_app",
    "load_service",
    "serve",
]
