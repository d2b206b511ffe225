"""trillion: DeepSeek-V4-class models in plain PyTorch.

The names below load on first use, so `import trillion` (and the `trillion` command, which must set
OpenMP's environment before torch starts: trillion/cli/main.py) does not import torch by itself.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_LAZY = {
    "load_model": ".checkpoint",
    "save_model": ".checkpoint",
    "ModelConfig": ".config",
    "LLM": ".engine",
    "SamplingParams": ".engine",
}

if TYPE_CHECKING:
    from .checkpoint import load_model, save_model
    from .config import ModelConfig
    from .engine import LLM, SamplingParams


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'trillion' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["LLM", "ModelConfig", "SamplingParams", "__version__", "load_model", "save_model"]
