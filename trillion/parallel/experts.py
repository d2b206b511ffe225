"""Expert parallelism over every rank (ep = world): each rank holds E / ep whole routed experts.

`ExpertParallelMoE.routed(x, weights, indices)` keeps `MoE.routed`'s contract (x [N, D], the
router's weights and global expert ids [N, k] -> float32 [N, D]), so `MoE.forward`, the engine and
`engine.ops.routed_experts` call it unchanged. The ranks of a tp group hold the same N tokens; each
sends its own share (tokens [n0, n1) of N, split near-equally), so no expert sees a token twice:
  1. sort this rank's (token, slot) pairs by expert (expert e lives on rank e // (E / ep));
  2. all_to_all the count of pairs per expert, then the pairs' activations and routing weights;
  3. run the local experts on what arrived (grouped by expert, weight applied as in MoE.routed);
  4. all_to_all the outputs back; sum each token's k outputs in float32 in expert order, as
     MoE.routed's index_add does;
  5. gather the tp group's shares, so every tp rank again holds all N rows (an all-gather; for a
     handful of tokens, where its padding would cost more, an all-reduce of zero-padded rows).
Hash-routed layers (tid2eid) and score-routed layers differ only in the router, before this.
Uneven loads are fine (an expert with no pair, a rank receiving every pair), and so is N = 0: a
rank with no token still joins steps 2, 4 and 5 with empty tensors (see parallelize.join_idle).
The shared expert is not here: every rank runs it on its own tokens (MoE.forward, engine stage_out).

Shapes: N tokens, n this rank's share, k experts per token, P pairs, D dim, E experts, L local experts.
"""

from __future__ import annotations

import torch

from ..config import ceil_div
from ..model.moe import MoE
from . import comm
from .shards import split_range


class ExpertParallelMoE(MoE):
    """A MoE holding routed experts [first_expert, first_expert + len(experts)) of cfg.n_routed_experts."""

    ep_group = tp_group = None
    ep_rank, ep, tp_rank, tp = 0, 1, 0, 1
    first_expert = 0

    def routed(self, x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return self._exchange(x, weights, indices, self._run_grouped)

    def routed_reference(self, x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The same exchange, the local experts run one pair at a time (the plain path)."""
        return self._exchange(x, weights, indices, self._run_each)

    # -- the exchange --

    def _exchange(self, x, weights, indices, run) -> torch.Tensor:
        n_all, k = indices.shape
        lo, hi = split_range(n_all, self.tp, self.tp_rank)
        x, weights, indices = x[lo:hi], weights[lo:hi], indices[lo:hi]
        n, d, local = hi - lo, x.shape[-1], len(self.experts)

        flat = indices.reshape(-1)  # [P]
        order = torch.argsort(flat, stable=True)  # pair ids grouped by expert (so by rank)
        per_expert = torch.bincount(flat, minlength=local * self.ep)  # [E]
        arriving = comm.all_to_all(per_expert, [local] * self.ep, [local] * self.ep, self.ep_group, self.ep_rank,
                                   "counts")  # [ep * L]: from each rank, pairs per local expert
        send = per_expert.view(self.ep, local).sum(1).tolist()
        recv = arriving.view(self.ep, local).sum(1).tolist()
        token = order // k
        xs = comm.all_to_all(x.index_select(0, token), send, recv, self.ep_group, self.ep_rank, "dispatch")
        ws = comm.all_to_all(weights.reshape(-1).index_select(0, order), send, recv, self.ep_group, self.ep_rank,
                             "dispatch")
        # the local expert of each arriving pair: the pairs come by rank, then by expert
        which = torch.arange(local, device=x.device).repeat(self.ep).repeat_interleave(arriving)
        ys = run(xs, ws, which)  # [sum(recv), D] in x's dtype
        back = comm.all_to_all(ys, recv, send, self.ep_group, self.ep_rank, "combine")  # in `order`
        out = torch.zeros(n, d, dtype=torch.float32, device=x.device).index_add_(0, token, back.float())
        if self.tp == 1 or n_all == 0:
            return out
        # Every tp rank needs all N rows. An all-gather pads each share to ceil(N / tp) rows, so for
        # fewer tokens than that pays for, a sum of zero-padded rows moves fewer bytes (x + 0 is exact).
        if 2 * n_all <= self.tp * ceil_div(n_all, self.tp):
            full = torch.zeros(n_all, d, dtype=torch.float32, device=x.device)
            full[lo:hi] = out
            return comm.all_reduce(full, self.tp_group, "gather")
        sizes = [b - a for a, b in (split_range(n_all, self.tp, i) for i in range(self.tp))]
        return comm.all_gather(out, self.tp_group, sizes, 0, "gather")

    def _run_grouped(self, xs: torch.Tensor, ws: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
        """Each local expert once on all its arriving pairs, as MoE.routed does per expert."""
        ys = torch.empty_like(xs)
        if not xs.shape[0]:
            return ys
        order = torch.argsort(which, stable=True)
        counts = torch.bincount(which, minlength=len(self.experts)).tolist()
        start = 0
        for e, c in enumerate(counts):
            if c:
                rows = order[start : start + c]
                ys[rows] = self.experts[e](xs[rows], ws[rows].unsqueeze(-1)).to(ys.dtype)
                start += c
        return ys

    def _run_each(self, xs: torch.Tensor, ws: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
        ys = torch.empty_like(xs)
        for i, e in enumerate(which.tolist()):
            ys[i] = self.experts[e](xs[i : i + 1], ws[i].view(1, 1))[0]
        return ys
