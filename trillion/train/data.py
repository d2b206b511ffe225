"""Token streams, fixed-length sequences and the data cursor.

Packing: each document becomes ``BOS doc EOS``; the documents of a split, in name order, are
concatenated into one stream, which is cut into sequences of ``seq_len + 1`` tokens overlapping
by one (inputs are the first ``seq_len``, targets the last ``seq_len``). A tail shorter than a
sequence is dropped.

Order: epoch ``e`` visits the training sequences in a permutation drawn from a generator seeded by
``(seed, e)`` alone, so the position in the data is two integers, the `Cursor` (epoch, index),
and restoring it restores the exact batches that follow.

Shapes: S sequences, T seq_len, B batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UserError
from .tokenizer import BOS_ID, EOS_ID


def pack(docs_ids: list[list[int]], bos: int = BOS_ID, eos: int = EOS_ID) -> torch.Tensor:
    """Documents' ids -> one int32 stream: BOS d0 EOS BOS d1 EOS ..."""
    n = sum(len(d) + 2 for d in docs_ids)
    out = torch.empty(n, dtype=torch.int32)
    i = 0
    for d in docs_ids:
        out[i] = bos
        out[i + 1 : i + 1 + len(d)] = torch.tensor(d, dtype=torch.int32)
        out[i + 1 + len(d)] = eos
        i += len(d) + 2
    return out


def sequences(stream: torch.Tensor, seq_len: int) -> torch.Tensor:
    """stream [N] -> [S, T + 1] windows with stride T (each shares its last token with the next)."""
    n = (stream.numel() - 1) // seq_len
    if n < 1:
        raise UserError(
            f"the token stream has {stream.numel()} tokens, fewer than one sequence of seq_len + 1 = "
            f"{seq_len + 1}; use more data or a shorter --seq-len"
        )
    return stream.unfold(0, seq_len + 1, seq_len)[:n]


@dataclass
class Cursor:
    """Where the next training batch starts: epoch and index into that epoch's permutation."""

    epoch: int = 0
    index: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    @classmethod
    def from_dict(cls, d: dict[str, int]) -> Cursor:
        return cls(int(d["epoch"]), int(d["index"]))


class Batches:
    """Training batches [B, T + 1] in a seeded order that reshuffles each epoch."""

    def __init__(self, seqs: torch.Tensor, batch: int, seed: int, cursor: Cursor | None = None):
        if seqs.shape[0] < batch:
            raise UserError(
                f"the training split has {seqs.shape[0]} sequences, fewer than one batch of {batch}; "
                "use more data, a smaller --batch or a shorter --seq-len"
            )
        self.seqs, self.batch, self.seed = seqs, batch, seed
        self.cursor = cursor or Cursor()
        self._order_epoch, self._order = -1, torch.empty(0, dtype=torch.long)

    def order(self, epoch: int) -> torch.Tensor:
        if epoch != self._order_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._order, self._order_epoch = torch.randperm(self.seqs.shape[0], generator=g), epoch
        return self._order

    def next(self) -> torch.Tensor:
        """The next batch [B, T + 1] (int64); an epoch's last partial batch is skipped."""
        c = self.cursor
        if c.index + self.batch > self.seqs.shape[0]:
            c.epoch, c.index = c.epoch + 1, 0
        rows = self.order(c.epoch)[c.index : c.index + self.batch]
        c.index += self.batch
        return self.seqs[rows].long()

    @property
    def epoch_progress(self) -> float:
        return self.cursor.epoch + self.cursor.index / self.seqs.shape[0]
