"""Held-out loss and perplexity of a trained model folder (`trillion eval`).

The folder's `training.json` says which data, held-out fraction, document limit and sequence
length the model was trained with, so the default evaluation is the run's own held-out split,
rebuilt from the sources with the folder's tokenizer, every sequence, in order: deterministic,
and equal to the final evaluation the run reported (same Python standard library, same threads).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import load_model
from ..errors import UserError
from .data import sequences
from .dataset import heldout_stream
from .objective import evaluate
from .tokenizer import load_tokenizer

DEFAULTS = {"data": ["stdlib"], "heldout": 0.02, "max_docs": None, "seq_len": 256, "batch": 8}


def training_info(folder: Path) -> dict[str, Any]:
    """The folder's training.json ({} when absent, e.g. a checkpoint not written by `trillion train`)."""
    path = Path(folder) / "training.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None


def evaluate_folder(
    folder: str | Path,
    *,
    data: list[str] | None = None,
    heldout: float | None = None,
    seq_len: int | None = None,
    batch: int | None = None,
    max_docs: int | None = None,
    max_batches: int | None = None,
    dtype: torch.dtype | str | None = None,
) -> dict[str, Any]:
    """{"eval_loss", "eval_ppl", "eval_tokens", "documents", "data", "heldout", "seq_len"}.

    Arguments left as None come from the folder's training.json, else from DEFAULTS.
    """
    folder = Path(folder)
    info = training_info(folder)

    def pick(name, value):
        return value if value is not None else info.get(name, DEFAULTS[name])

    data, heldout, seq_len = pick("data", data), pick("heldout", heldout), pick("seq_len", seq_len)
    batch, max_docs = pick("batch", batch), pick("max_docs", max_docs)
    tok = load_tokenizer(folder)
    model = load_model(folder, dtype=dtype)
    stream, n_docs = heldout_stream(data, tokenizer=tok, heldout=heldout, max_docs=max_docs)
    result = evaluate(model, sequences(stream, seq_len), batch, max_batches)
    return {**result, "documents": n_docs, "data": list(data), "heldout": heldout, "seq_len": seq_len}
