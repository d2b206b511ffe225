"""GGUF export: trillion models as single files that llama.cpp (`deepseek4`) and the tools on it run.

  export_gguf(model, out, type="f32"|"f16"|"q8_0", tokenizer=)   Transformer -> GGUF file
  check_llamacpp_support(cfg) / llamacpp_problems(cfg)          what llama.cpp's loader refuses

`spec` holds what llama.cpp reads (tensor names, metadata keys, accepted configs), `vocab` the
tokenizer metadata, `export` the writer. Needs the optional `gguf` package (`trillion[gguf]`).
"""

from .export import TYPES, export_gguf, require_gguf
from .spec import check_llamacpp_support, llamacpp_problems
from .vocab import CHAT_TEMPLATE, read_vocab

__all__ = [
    "CHAT_TEMPLATE",
    "TYPES",
    "check_llamacpp_support",
    "export_gguf",
    "llamacpp_problems",
    "read_vocab",
    "require_gguf",
]
