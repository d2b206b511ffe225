"""Per-sequence attention state of V4, allocated from pools shared by all running sequences.

What one sequence keeps, per layer (main layers and MTP blocks alike):

* window ring: the last `window + slack` KV vectors, slot = position mod ring size. The slack
  (the most tokens one speculative step can add) lets a rejected draft be rolled back by resetting
  the length: nothing the window still needs is overwritten;
* compressor partial block: the projections (kv, gated score incl. ape) of the tokens of the
  current incomplete block, plus, for overlapping (CSA) compressors, those of the last complete
  block, which the next entry also pools over;
* compressed entries: one KV vector per `ratio` tokens, in pages of `page_size` entries;
* CSA layers also keep the indexer's compressor state and its compressed keys, paged alike.

Every sequence takes one fixed-size *slot* (window ring + partial blocks) and, per distinct ratio,
a list of pages that grows as entries are emitted. Pages come from a free list shared by all
sequences, so sequences of very different lengths share memory without fragmentation; a finished
sequence returns its slot and pages at once.

Shapes: S slots, Wr ring size, P entries per page, K head dim, d index head dim, r ratio,
c*w compressor projection width.
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
    comp_kv: torch.Tensor | None = None  # [S, slots, c*K] float32
    comp_score: torch.Tensor | None = None  # [S, slots, c*K] float32
    entries: torch.Tensor | None = None  # [pages, P, K]
    idx_kv: torch.Tensor | None = None  # [S, slots, 2*d] float32 (CSA)
    idx_score: torch.Tensor | None = None
    idx_keys: torch.Tensor | None = None  # [pages, P, d] (CSA)


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
        by default enough for every slot at `cfg.max_seq_len` capped at 8192 tokens."""
        self.cfg, self.max_seqs, self.page_size, self.dtype = cfg, max_seqs, page_size, dtype
        self.ring_size = cfg.window_size + spec_slack
        n = cfg.n_layers + cfg.n_mtp_layers if n_layers is None else n_layers
        self.groups = sorted({self.group(i) for i in range(n) if cfg.ratio(i)})
        if max_entries is None:
            tokens = min(cfg.max_seq_len, 8192)
            max_entries = {r: max_seqs * ceil_div(tokens, r) for _, r in self.groups}
        self.n_pages = {g: ceil_div(max_entries.get(g[1], 0), page_size) + max_seqs for g in self.groups}
        # one extra page per group is never handed out: the decode path points unused page-table
        # cells at it, so fixed-width gathers and masked writes stay inside the pool
        self.n_pages = {g: n + 1 for g, n in self.n_pages.items()}
        self.free_pages = {g: list(range(self.n_pages[g] - 1, 0, -1)) for g in self.groups}
        self.scratch = {g: 0 for g in self.groups}
        self.free_slots = list(range(max_seqs - 1, -1, -1))
        k, d = cfg.head_dim, cfg.index_head_dim
        f32 = {"dtype": torch.float32, "device": device}
        self.layers: list[LayerState] = []
        for i in range(n):
            st = LayerState(ring=torch.zeros(max_seqs, self.ring_size, k, dtype=dtype, device=device))
            r = cfg.ratio(i)
            if r:
                c = 2 if cfg.is_sparse(i) else 1
                st.ratio = r
                st.comp_kv = torch.zeros(max_seqs, c * r, c * k, **f32)
                st.comp_score = torch.full((max_seqs, c * r, c * k), float("-inf"), **f32)
                st.entries = torch.zeros(self.n_pages[self.group(i)], page_size, k, dtype=dtype, device=device)
                if cfg.is_sparse(i):
                    st.idx_kv = torch.zeros(max_seqs, 2 * r, 2 * d, **f32)
                    st.idx_score = torch.full((max_seqs, 2 * r, 2 * d), float("-inf"), **f32)
                    st.idx_keys = torch.zeros(self.n_pages[self.group(i)], page_size, d, dtype=dtype, device=device)
            self.layers.append(st)

    def group(self, layer: int) -> tuple[str, int]:
        """(stack, ratio): layers of one group share a page table."""
        return (MAIN if layer < self.cfg.n_layers else MTP, self.cfg.ratio(layer))

    # ------------------------------------------------------------------ allocation

    def pages_needed(self, tokens: int) -> dict[tuple[str, int], int]:
        return {g: ceil_div(tokens // g[1], self.page_size) for g in self.n_pages}

    def can_admit(self, tokens: int, reserved: dict | None = None) -> bool:
        """Would a sequence of up to `tokens` tokens fit next to what is already reserved?"""
        if not self.free_slots:
            return False
        reserved = reserved or {}
        return all(
            len(self.free_pages[g]) - reserved.get(g, 0) >= need for g, need in self.pages_needed(tokens).items()
        )

    def allocate(self) -> SeqState:
        if not self.free_slots:
            raise OutOfPages(f"all {self.max_seqs} sequence slots are in use")
        seq = SeqState(slot=self.free_slots.pop(), pages={g: [] for g in self.n_pages})
        self.reset_slot(seq.slot)
        return seq

    def reset_slot(self, slot: int) -> None:
        for st in self.layers:
            if st.comp_kv is not None:
                st.comp_kv[slot] = 0
                st.comp_score[slot] = float("-inf")
            if st.idx_kv is not None:
                st.idx_kv[slot] = 0
                st.idx_score[slot] = float("-inf")

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

    def trim_pages(self, seq: SeqState) -> None:
        """Return pages beyond what the sequence's lengths need (after a rejected draft)."""
        for (st, r), table in seq.pages.items():
            need = ceil_div(seq.lengths[st] // r, self.page_size)
            while len(table) > need:
                self.free_pages[(st, r)].append(table.pop())

    def fork(self, seq: SeqState) -> SeqState:
        """A new sequence with a copy of `seq`'s state (n > 1 samples share one prefill)."""
        child = self.allocate()
        child.lengths = dict(seq.lengths)
        for i, st in enumerate(self.layers):
            st.ring[child.slot] = st.ring[seq.slot]
            for t in (st.comp_kv, st.comp_score, st.idx_kv, st.idx_score):
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
        return sum(self.n_pages[g] - 1 - len(self.free_pages[g]) for g in self.n_pages)

    def slots_in_use(self) -> int:
        return self.max_seqs - len(self.free_slots)

    def nbytes(self) -> int:
        total = 0
        for st in self.layers:
            for t in (st.ring, st.comp_kv, st.comp_score, st.entries, st.idx_kv, st.idx_score, st.idx_keys):
                if t is not None:
                    total += t.numel() * t.element_size()
        return total

    # ------------------------------------------------------------------ paged access

    def entry_index(
        self, seqs: list[SeqState], group: tuple[str, int], counts: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat pool rows [B, Cmax] of each sequence's first `counts[b]` entries, and a valid mask."""
        cmax = max(counts) if counts else 0
        p = self.page_size
        rows = torch.zeros(len(seqs), cmax, dtype=torch.long)
        valid = torch.zeros(len(seqs), cmax, dtype=torch.bool)
        for b, (seq, c) in enumerate(zip(seqs, counts)):
            if c:
                table = torch.tensor(seq.pages[group][: ceil_div(c, p)], dtype=torch.long)
                idx = (table[:, None] * p + torch.arange(p)).reshape(-1)[:c]
                rows[b, :c] = idx
                valid[b, :c] = True
        return rows, valid
