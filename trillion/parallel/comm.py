"""The collectives the parallel model uses, each one function, with an optional byte count.

Every message the parallel model sends goes through here, so `counting()` can record the traffic
(benchmarks/comm_bench.py checks it against the formula in docs/distributed.md). Bytes *sent* by
this rank are counted as a bandwidth-optimal implementation puts them on the wire:
  all_reduce of n bytes over p ranks (ring: reduce-scatter then all-gather)  2 (p - 1) / p * n
  all_gather of a c-byte chunk from each of p ranks (ring)                   (p - 1) * c
  all_to_all (direct)                                                        the rows meant for others
Nothing is counted for a group of one rank, which sends nothing (and no collective is called).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.distributed as dist


@dataclass
class Traffic:
    """What this rank sent while counting: one (op, tag, group size, bytes sent) row per call."""

    calls: list[tuple[str, str, int, int]] = field(default_factory=list)

    def sent(self, op: str | None = None, tag: str | None = None) -> int:
        return sum(b for o, t, _, b in self.calls if (op is None or o == op) and (tag is None or t == tag))


_recorders: list[Traffic] = []


@contextmanager
def counting() -> Iterator[Traffic]:
    """Record the bytes this rank sends through these collectives inside the block."""
    t = Traffic()
    _recorders.append(t)
    try:
        yield t
    finally:
        _recorders.remove(t)


def _count(op: str, tag: str, p: int, nbytes: float) -> None:
    for r in _recorders:
        r.calls.append((op, tag, p, round(nbytes)))


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def all_reduce(t: torch.Tensor, group, tag: str = "") -> torch.Tensor:
    """Sum `t` over `group` in place; returns it."""
    p = dist.get_world_size(group)
    if p > 1:
        _count("all_reduce", tag, p, 2 * (p - 1) / p * _nbytes(t))
        dist.all_reduce(t, group=group)
    return t


def all_gather(t: torch.Tensor, group, sizes: list[int], dim: int, tag: str = "") -> torch.Tensor:
    """Concatenate along `dim` the pieces the ranks of `group` hold; rank i's piece is `sizes[i]`
    long along `dim` (this rank's is `t`). Pieces of unequal length are padded on the wire."""
    p = dist.get_world_size(group)
    longest = max(sizes)
    if p == 1 or longest == 0:  # every rank knows `sizes`: nothing to send
        return t
    piece = t.movedim(dim, 0)
    if piece.shape[0] < longest:
        piece = torch.cat((piece, piece.new_zeros(longest - piece.shape[0], *piece.shape[1:])))
    piece = piece.contiguous()
    out = piece.new_empty(p * longest, *piece.shape[1:])
    _count("all_gather", tag, p, (p - 1) * _nbytes(piece))
    _all_gather_single(out, piece, group=group)
    parts = [out[i * longest : i * longest + n] for i, n in enumerate(sizes)]
    return torch.cat(parts).movedim(0, dim)


# torch 2.13 renamed all_gather_into_tensor; the project supports torch >= 2.6
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def all_to_all(
    t: torch.Tensor, send: list[int], recv: list[int], group, rank: int, tag: str = ""
) -> torch.Tensor:
    """Rows send[i] (in order) of `t` go to rank i of `group`; returns the recv[i] rows from each
    rank i, in rank order. `rank` is this process's rank in `group`."""
    p = len(send)
    out = t.new_empty(sum(recv), *t.shape[1:])
    if p == 1:
        out.copy_(t)
        return out
    row = t.element_size() * math.prod(t.shape[1:])
    _count("all_to_all", tag, p, (sum(send) - send[rank]) * row)
    dist.all_to_all_single(out, t.contiguous(), recv, send, group=group)
    return out
