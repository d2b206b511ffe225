"""Per-sequence attention state of V4, allocated from pools shared by all running sequences.

What one sequence keeps, per layer (main layers and MTP blocks alike):

* window ring: the last `window + slack` KV vectors, slot = position mod ring size;
* compressor ring (CSA and HCA layers): the float32 projections (kv, and the gate score with ape)
  of the last `c * ratio + slack` tokens, slot = position mod ring size: the current incomplete
  block, and for overlapping (CSA) compressors the complete block before it, which the next entry
  also pools over (c = 2; c = 1 otherwise);
* compressed entries: one KV vector per `ratio` tokens, in pages of `page_size` entries;
* CSA layers also keep the indexer compressor's ring and its compressed keys, paged alike.

The slack is the most tokens one speculative step adds. Both rings are indexed by position, so a
step that is rolled back needs no undo: resetting the sequence's length leaves every token the
state still needs in place (the slack keeps them from being overwritten), and entries written past
the new length are neither visible nor kept: the block is pooled again when it really completes.

Every sequence takes one fixed-size *slot* (the rings) and, per (stack, ratio) group, a list of
pages that grows as entries are emitted. Pages come from a free list shared by all sequences, so
sequences of very different lengths share memory without fragmentation; a finished sequence
returns its slot and pages at once. Admission reserves a request's pages up front
(`reserve`), so a running sequence never runs out.

Shapes: S slots, Wr window ring, Rc compressor ring, P entries per page, K head dim, d index head
dim, c*w compressor projection width.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..config import ModelConfig, ceil_div


class OutOfPages(RuntimeError):
    """The pool has no free page or slot left; the scheduler waits for a sequence to finish."""


@dataclass
class LayerState:
    """Pool tensors of one layer (index over main layers, then MTP blocks)."""

    ring: torch.Tensor  # [S, Wr, K]
    ratio: int = 0
    comp_kv: torch.Tensor | None = None  # [S, Rc, c*K] float32
    comp_score: torch.Tensor | None = None  # [S, Rc, c*K] float32, ape included
    entries: torch.Tensor | None = None  # [pages, P, K]
    idx_kv: torch.Tensor | None = None  # [S, Rc, 2*d] float32 (CSA)
    idx_score: torch.Tensor | None = None
    idx_keys: torch.Tensor | None = None  # [pages, P, d] (CSA)

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (self.ring, self.comp_kv, self.comp_score, self.entries, self.idx_kv, self.idx_score,
                            self.idx_keys) if t is not None]


MAIN, MTP = "main", "mtp"


@dataclass
class SeqState:
    """Host-side bookkeeping of one sequence: its slot, and per stack (main layers / MTP blocks)
    the tokens processed and one page table per ratio. The MTP stack lags the main one: at
    position t it needs token t + 1."""

    slot: int
    lengths: dict[str, int] = field(default_factory=lambda: {MAIN: 0, MTP: 0})
    pages: dict[tuple[str, int], list[int]] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return self.lengths[MAIN]


class StatePool:
    """All attention state of a model for up to `max_seqs` concurrent sequences."""

    def __init__(
        self,
        cfg: ModelConfig,
        *,
        max_seqs: int,
        max_entries: dict[int, int] | None = None,
        page_size: int = 64,
        spec_slack: int = 0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        n_layers: int | None = None,
    ):
        """max_entries[r]: compressed entries (all sequences together) the pool holds for ratio r;
        by default enough for every slot at `cfg.max_seq_len` capped at 8192 tokens.
        spec_slack: the most tokens one step may add and then roll back (speculative decoding)."""
        self.cfg, self.max_seqs, self.page_size, self.dtype = cfg, max_seqs, page_size, dtype
        self.slack = spec_slack
        self.ring_size = cfg.window_size + spec_slack
        n = cfg.n_layers + cfg.n_mtp_layers if n_layers is None else n_layers
        self.groups = sorted({self.group(i) for i in range(n) if cfg.ratio(i)})
        if max_entries is None:
            tokens = min(cfg.max_seq_len, 8192)
            max_entries = {r: max_seqs * ceil_div(tokens, r) for _, r in self.groups}
        # Page 0 of every group is never handed out: page tables are padded with it, so fixed-width
        # gathers and writes of entries that do not exist stay inside the pool (and are masked).
        self.scratch = 0
        self.n_pages = {g: 1 + ceil_div(max_entries.get(g[1], 0), page_size) + max_seqs for g in self.groups}
        self.free_pages = {g: list(range(self.n_pages[g] - 1, 0, -1)) for g in self.groups}
        self.reserved = dict.fromkeys(self.groups, 0)  # pages promised to admitted sequences
        self.free_slots = list(range(max_seqs - 1, -1, -1))
        k, d = cfg.head_dim, cfg.index_head_dim
        f32 = {"dtype": torch.float32, "device": device}
        self.layers: list[LayerState] = []
        for i in range(n):
            st = LayerState(ring=torch.zeros(max_seqs, self.ring_size, k, dtype=dtype, device=device))
            r = cfg.ratio(i)
            if r:
                c = 2 if cfg.is_sparse(i) else 1
                rc = self.comp_ring_size(i)
                st.ratio = r
                st.comp_kv = torch.zeros(max_seqs, rc, c * k, **f32)
                st.comp_score = torch.zeros(max_seqs, rc, c * k, **f32)
                st.entries = torch.zeros(self.n_pages[self.group(i)], page_size, k, dtype=dtype, device=device)
                if cfg.is_sparse(i):
                    st.idx_kv = torch.zeros(max_seqs, rc, 2 * d, **f32)
                    st.idx_score = torch.zeros(max_seqs, rc, 2 * d, **f32)
                    st.idx_keys = torch.zeros(self.n_pages[self.group(i)], page_size, d, dtype=dtype, device=device)
            self.layers.append(st)

    def group(self, layer: int) -> tuple[str, int]:
        """(stack, ratio): layers of one group share a page table."""
        return (MAIN if layer < self.cfg.n_layers else MTP, self.cfg.ratio(layer))

    def comp_ring_size(self, layer: int) -> int:
        """Compressor ring rows of `layer`: the window of one entry (c * ratio) plus the slack."""
        c = 2 if self.cfg.is_sparse(layer) else 1
        return c * self.cfg.ratio(layer) + self.slack

    # ------------------------------------------------------------------ admission

    def pages_needed(self, tokens: int) -> dict[tuple[str, int], int]:
        """Pages per group that one sequence of `tokens` tokens fills."""
        return {g: ceil_div(tokens // g[1], self.page_size) for g in self.groups}

    def can_admit(self, tokens: int, n: int = 1) -> bool:
        """Could n sequences of up to `tokens` tokens each start now, next to what is reserved?"""
        return len(self.free_slots) >= n and all(
            len(self.free_pages[g]) - self.reserved[g] >= n * need for g, need in self.pages_needed(tokens).items()
        )

    def fits_ever(self, tokens: int, n: int = 1) -> bool:
        """Could n such sequences fit the empty pool?"""
        return n <= self.max_seqs and all(
            n * need <= self.n_pages[g] - 1 for g, need in self.pages_needed(tokens).items()
        )

    def reserve(self, tokens: int) -> dict[tuple[str, int], int]:
        """Promise the pages of one sequence of up to `tokens` tokens; give them back with `unreserve`."""
        need = self.pages_needed(tokens)
        for g, n in need.items():
            self.reserved[g] += n
        return need

    def unreserve(self, need: dict[tuple[str, int], int]) -> None:
        for g, n in need.items():
            self.reserved[g] -= n

    # ------------------------------------------------------------------ allocation

    def allocate(self) -> SeqState:
        if not self.free_slots:
            raise OutOfPages(f"all {self.max_seqs} sequence slots are in use")
        return SeqState(slot=self.free_slots.pop(), pages={g: [] for g in self.groups})

    def ensure_pages(self, seq: SeqState, stack: str, length: int) -> None:
        """Give `seq` enough pages in `stack` to hold the entries of `length` tokens."""
        for (st, r), table in seq.pages.items():
            if st != stack:
                continue
            need = ceil_div(length // r, self.page_size)
            while len(table) < need:
                if not self.free_pages[(st, r)]:
                    raise OutOfPages(f"no free page left for ratio {r} ({self.n_pages[(st, r)]} pages)")
                table.append(self.free_pages[(st, r)].pop())

    def truncate(self, seq: SeqState, stack: str, length: int) -> None:
        """Roll `seq`'s `stack` back to its first `length` tokens (a rejected speculative draft).

        The rings need nothing (their slack keeps what the shorter state needs); pages past what
        `length` tokens fill go back to the pool."""
        seq.lengths[stack] = length
        for (st, r), table in seq.pages.items():
            need = ceil_div(seq.lengths[st] // r, self.page_size)
            while len(table) > need:
                self.free_pages[(st, r)].append(table.pop())

    def fork(self, seq: SeqState) -> SeqState:
        """A new sequence with a copy of `seq`'s state (n > 1 samples share one prefill)."""
        child = self.allocate()
        child.lengths = dict(seq.lengths)
        for st in self.layers:
            for t in (st.ring, st.comp_kv, st.comp_score, st.idx_kv, st.idx_score):
                if t is not None:
                    t[child.slot] = t[seq.slot]
        for g, table in seq.pages.items():
            stack, _r = g
            self.ensure_pages(child, stack, child.lengths[stack])
            dst = torch.tensor(child.pages[g], dtype=torch.long)
            src = torch.tensor(table[: len(dst)], dtype=torch.long)
            for i, st in enumerate(self.layers):
                if st.entries is not None and self.group(i) == g:
                    st.entries[dst] = st.entries[src]
                    if st.idx_keys is not None:
                        st.idx_keys[dst] = st.idx_keys[src]
        return child

    def release(self, seq: SeqState) -> None:
        for g, table in seq.pages.items():
            self.free_pages[g].extend(reversed(table))
            table.clear()
        self.free_slots.append(seq.slot)
        seq.slot = -1

    # ------------------------------------------------------------------ accounting

    def pages_in_use(self) -> int:
        return sum(self.n_pages[g] - 1 - len(self.free_pages[g]) for g in self.groups)

    def slots_in_use(self) -> int:
        return self.max_seqs - len(self.free_slots)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for st in self.layers for t in st.tensors())

    # ------------------------------------------------------------------ paged access

    def page_rows(self, seqs: list[SeqState], group: tuple[str, int], width: int) -> torch.Tensor:
        """Flat pool rows [B, width * P] of entries 0, 1, ... of each sequence (page tables padded
        with the scratch page)."""
        table = torch.full((len(seqs), width), self.scratch, dtype=torch.long)
        for b, s in enumerate(seqs):
            pages = s.pages[group][:width]
            table[b, : len(pages)] = torch.tensor(pages, dtype=torch.long)
        return (table[:, :, None] * self.page_size + torch.arange(self.page_size)).flatten(1)
