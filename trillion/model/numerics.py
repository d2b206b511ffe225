"""Fake-quantisation points of DeepSeek's inference code (used only when cfg.fake_quant is on).

DeepSeek trained V4 with quantisation-aware training and its inference code reproduces the
rounding: the non-rope channels of every KV vector go through FP8 (blocks of 64, UE8M0 scales),
the lightning indexer's queries and keys through a Hadamard rotation and FP4 (blocks of 32).
The codecs themselves live in `trillion.formats`.
"""

from __future__ import annotations

import torch

KV_FP8_BLOCK = 64
FP4_BLOCK = 32


def fake_quant_kv_nope(kv: torch.Tensor, rope_dim: int) -> torch.Tensor:
    """FP8-round the first (non-rope) channels of KV vectors; rope channels stay exact."""
    from ..formats import fake_quant_fp8

    nope, rope = kv[..., :-rope_dim], kv[..., -rope_dim:]
    return torch.cat((fake_quant_fp8(nope, block=KV_FP8_BLOCK), rope), dim=-1)


def fake_quant_fp4(x: torch.Tensor) -> torch.Tensor:
    from ..formats import fake_quant_fp4 as fq4

    return fq4(x, block=FP4_BLOCK)


def hadamard(x: torch.Tensor) -> torch.Tensor:
    from ..formats import hadamard as h

    return h(x)
