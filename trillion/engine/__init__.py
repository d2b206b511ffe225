"""The inference engine: V4's attention state, incremental decoding, batching, sampling, MTP drafts.

    LLM(model_or_path_or_flavor, **engine_options).generate(prompts, SamplingParams(...))
"""

from .engine import Engine
from .llm import LLM, Completion, Output, StreamChunk
from .sampling import SamplingParams

__all__ = ["LLM", "Completion", "Engine", "Output", "SamplingParams", "StreamChunk"]
