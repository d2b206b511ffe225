"""From sources to tensors: corpus -> split -> tokenizer -> packed token streams.

The tokenizer is trained on the training split only (the held-out documents stay unseen). The
token streams are cached in the run folder (`data/tokens.safetensors`), keyed by a fingerprint of
the documents and the tokenizer, because encoding the whole standard library takes a while on a
small CPU. `heldout_stream` rebuilds the held-out stream alone, which is what `trillion eval` needs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .corpus import Document, load_corpus, split
from .data import pack
from .tokenizer import encode_documents, load_tokenizer, train_tokenizer

CACHE = "data/tokens.safetensors"


@dataclass
class Dataset:
    tokenizer: object  # tokenizers.Tokenizer
    train: torch.Tensor  # int32 stream
    heldout: torch.Tensor  # int32 stream
    n_train_docs: int
    n_heldout_docs: int

    def token_counts(self, vocab_size: int) -> torch.Tensor:
        """How often each id occurs in the training stream [V] (int64)."""
        return torch.bincount(self.train.long(), minlength=vocab_size)[:vocab_size]


def fingerprint(docs: list[Document], tokenizer_json: str) -> str:
    h = hashlib.sha256(tokenizer_json.encode())
    for d in docs:
        h.update(d.name.encode() + b"\0" + d.text.encode() + b"\0")
    return h.hexdigest()


def prepare(
    sources, *, vocab_size: int, heldout: float, max_docs: int | None, run_dir: str | Path, tokenizer=None
) -> Dataset:
    """Load the corpus, train (or reuse) the tokenizer, and return both splits' streams.

    `tokenizer`: reuse this one (a resumed run passes its saved tokenizer) instead of training.
    """
    run_dir = Path(run_dir)
    train_docs, held_docs = split(load_corpus(sources, max_docs), heldout)
    if tokenizer is None:
        tokenizer = train_tokenizer((d.text for d in train_docs), vocab_size)
    key = fingerprint(train_docs + held_docs, tokenizer.to_str())
    cache = run_dir / CACHE
    if cache.is_file():
        from safetensors import safe_open

        with safe_open(str(cache), framework="pt") as f:
            same = (f.metadata() or {}).get("fingerprint") == key
        if same:
            t = load_file(str(cache))
            return Dataset(tokenizer, t["train"], t["heldout"], len(train_docs), len(held_docs))
    train = pack(encode_documents(tokenizer, [d.text for d in train_docs]))
    held = pack(encode_documents(tokenizer, [d.text for d in held_docs]))
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    save_file({"train": train, "heldout": held}, str(tmp), metadata={"fingerprint": key})
    tmp.replace(cache)
    return Dataset(tokenizer, train, held, len(train_docs), len(held_docs))


def heldout_stream(sources, *, tokenizer, heldout: float, max_docs: int | None) -> tuple[torch.Tensor, int]:
    """The held-out split's packed stream under `tokenizer`, and its document count."""
    _, held_docs = split(load_corpus(sources, max_docs), heldout)
    return pack(encode_documents(tokenizer, [d.text for d in held_docs])), len(held_docs)


__all__ = ["Dataset", "heldout_stream", "load_tokenizer", "prepare"]
