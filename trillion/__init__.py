"""trillion: DeepSeek-V4-class models in plain PyTorch."""

from .checkpoint import load_model, save_model
from .config import ModelConfig
from .engine import LLM, SamplingParams

__version__ = "0.1.0"

__all__ = ["LLM", "ModelConfig", "SamplingParams", "__version__", "load_model", "save_model"]
