"""Compute dtypes by name: what users type ("bf16", "bfloat16") and what config.json stores."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import UserError

NAMES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def as_dtype(dtype: torch.dtype | str | None, default: torch.dtype = torch.float32) -> torch.dtype:
    """torch dtype, its name, or None (-> `default`) -> a floating torch dtype."""
    if dtype is None:
        return default
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise UserError(f"compute dtype must be floating, got {dtype}")
        return dtype
    name = str(dtype).removeprefix("torch.")
    if name not in NAMES:
        raise UserError(f"unknown dtype {dtype!r}; expected one of {sorted(NAMES)}")
    return NAMES[name]


def dtype_name(dtype: torch.dtype) -> str:
    """torch.bfloat16 -> 'bfloat16' (the spelling config.json uses)."""
    return str(dtype).removeprefix("torch.")


def config_dtype(raw: dict) -> torch.dtype | None:
    """The compute dtype a config.json records ("dtype", or the older "torch_dtype"), if any."""
    value = raw.get("dtype", raw.get("torch_dtype"))
    try:
        return as_dtype(value) if value else None
    except ValueError:
        return None


def folder_dtype(src: str | Path) -> torch.dtype | None:
    """The compute dtype a checkpoint folder's config.json records; None for a flavor or no record."""
    config = Path(src) / "config.json"
    if not config.is_file():
        return None
    try:
        return config_dtype(json.loads(config.read_text()))
    except ValueError:  # unreadable: load_model names the file
        return None
