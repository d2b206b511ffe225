"""DeepSeek-V4 model math, one concept per module; free of devices, processes and kernels."""

from .transformer import Transformer

__all__ = ["Transformer"]
