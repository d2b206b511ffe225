"""What the distributed tests run, shared by the worker processes and the tests that check them."""

from __future__ import annotations

import torch
from helpers import mixed_config

MESHES = [(1, 2), (2, 1), (2, 2)]  # (dp, tp)
ROWS, LENGTH = 4, 21  # 21 tokens: not a multiple of the window (8), CSA (4) or HCA (16) ratios


def config():
    """Every layer kind (window, CSA, HCA, two hash layers, an MTP block); 8 experts divide 2 and 4 ranks;
    a vocabulary of 97 splits unevenly over tp = 2."""
    return mixed_config(n_routed_experts=8, name="parallel-test")


def official_config():
    """Widths the release's storage takes (FP4 experts: multiples of 32) whose tensor-parallel parts
    fall on whole 128 x 128 FP8 blocks at tp = 2 (wq_b 256 rows, wo_a 256 rows, wo_b 256 columns)."""
    return mixed_config(
        n_routed_experts=8, dim=128, moe_inter_dim=32, head_dim=64, o_lora_rank=128, name="parallel-official"
    )


def tokens(cfg=None) -> torch.Tensor:
    vocab = (cfg or config()).vocab_size
    return torch.randint(0, vocab, (ROWS, LENGTH), generator=torch.Generator().manual_seed(11))


def dp_part(ids: torch.Tensor, dp: int, group: int) -> torch.Tensor:
    """The sequences dp group `group` runs: its own rows, and a different length per group."""
    rows = ids.shape[0] // dp
    return ids[group * rows : (group + 1) * rows, : ids.shape[1] - 4 * group]


@torch.no_grad()
def skew(model):
    """Route every token of the score-routed layers to experts 0 and 1 (rank 0 receives every pair) and
    every token of the hash layers to experts 6 and 7 (the last rank): most experts get nothing."""
    for blk in [*model.layers, *model.mtp]:
        gate = blk.ffn.gate
        if gate.hashed:
            gate.tid2eid[:] = torch.tensor([6, 7])
        else:
            gate.bias.zero_()
            gate.bias[:2] = 100.0
    return model


def prompts(cfg=None) -> list[list[int]]:
    """Prompts of different lengths (one longer than the engine tests' prefill chunk) for the engine runs."""
    vocab = (cfg or config()).vocab_size
    g = torch.Generator().manual_seed(5)
    return [torch.randint(0, vocab, (n,), generator=g).tolist() for n in (3, 19, 7, 26, 11)]


ENGINE = {"max_seqs": 3, "prefill_chunk": 8, "page_size": 4, "max_model_len": 64}  # batching, chunks, queueing
