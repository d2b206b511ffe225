"""Which parameters keep float32 whatever the compute dtype.

DeepSeek's inference code keeps norms, mHC, attention sinks, the compressor (ape, wkv, wgate),
the router and the head in float32 and computes them in float32; everything else follows the
compute dtype (bf16 in DeepSeek's code, float32 or bf16 here).
"""

from __future__ import annotations

import re

import torch
from torch import nn

FP32_PATTERNS = (
    r"norm\.weight$",
    r"(^|\.)hc_[a-z_]+$",
    r"\.attn_sink$",
    r"\.compressor\.(ape|wkv\.weight|wgate\.weight)$",
    r"\.gate\.(weight|bias)$",
    r"^head\.weight$",
)
_FP32 = re.compile("|".join(FP32_PATTERNS))


def keeps_fp32(name: str) -> bool:
    """True for parameters that stay float32 (see module docstring)."""
    return bool(_FP32.search(name))


def param_dtype(name: str, dtype: torch.dtype) -> torch.dtype:
    """The dtype parameter `name` has in a model whose compute dtype is `dtype`."""
    return torch.float32 if keeps_fp32(name) else dtype


@torch.no_grad()
def cast_model(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast floating parameters to `dtype`, except the float32 ones. Buffers (tid2eid) are kept."""
    for name, p in model.named_parameters():
        want = param_dtype(name, dtype)
        if p.is_floating_point() and p.dtype != want:
            p.data = p.data.to(want)
    return model
