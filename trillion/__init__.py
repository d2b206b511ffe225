"""trillion: DeepSeek-V4-class models in plain PyTorch."""

from .config import ModelConfig

__version__ = "0.1.0"

__all__ = ["ModelConfig", "__version__"]
