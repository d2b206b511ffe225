"""Cutting a built model to one rank's part (no processes: `shard` does no communication)."""

import copy

import pytest
import torch
from helpers import random_model

from tests.parallel import cases
from trillion.parallel import Placement, shard
from trillion.quant import quantize_model


@torch.no_grad()
@pytest.mark.parametrize("scheme", ["v4-release", "int8", "int4-g32"])  # blocks; a 1-D scale; packed groups
def test_quantised_weights_are_cut_through_their_codes(scheme):
    """Each rank's quantised wq_b / wo_a (rows) and wo_b (columns) decode to exactly its part of the
    full module's decoded weight; its experts are the full model's experts r * 4 ... r * 4 + 3."""
    cfg = cases.official_config().replace(q_lora_rank=128)
    full = quantize_model(random_model(cfg), scheme)
    for r in range(2):
        part = shard(copy.deepcopy(full), Placement(tp_rank=r, tp=2, ep_rank=r, ep=2))
        for i in (1, cfg.n_layers):  # a main layer and the MTP block
            blk = full.layers[i] if i < cfg.n_layers else full.mtp[0]
            mine = part.layers[i] if i < cfg.n_layers else part.mtp[0]
            rows = slice(r * 128, (r + 1) * 128)  # 2 of 4 heads x 64; 1 of 2 groups x 128
            for name in ("wq_b", "wo_a"):
                got, want = getattr(mine.attn, name), getattr(blk.attn, name)
                assert type(got) is type(want)
                assert torch.equal(got.dequantized_weight(), want.dequantized_weight()[rows]), name
            assert torch.equal(mine.attn.wo_b.dequantized_weight(), blk.attn.wo_b.dequantized_weight()[:, rows])
            assert torch.equal(mine.attn.attn_sink, blk.attn.attn_sink[2 * r : 2 * r + 2])
            assert (mine.attn.n_heads, mine.attn.o_groups) == (2, 1)
            assert len(mine.ffn.experts) == 4
            for j in range(4):
                assert torch.equal(mine.ffn.experts[j].w2.dequantized_weight(),
                                   blk.ffn.experts[r * 4 + j].w2.dequantized_weight())


def test_a_cut_inside_a_scale_block_is_refused():
    cfg = cases.config()  # wq_b has 4 heads x 32 = 128 rows: tp = 2 cuts its one 128-row FP8 block
    full = quantize_model(random_model(cfg), "fp8-block")
    before = {k: v.clone() for k, v in full.state_dict().items()}
    with pytest.raises(ValueError, match=r"layers.0.attn.wq_b: .*fp8 .*rows \[64, 128\) of a \[128, 24\] weight .* 128-wide"):
        shard(full, Placement(tp_rank=1, tp=2, ep_rank=1, ep=2))
    after = full.state_dict()  # refused before anything was cut
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())
