"""The planner's formulas (docs/plan.md [M1]-[T1]) against hand arithmetic on the tiny flavor and a
toy chip with round figures; the layout search; bad requests."""

import math

import pytest

from trillion.flavors import FLAVORS
from trillion.kvcost import kv_cost, v4_attention_flops, v4_matmul_params
from trillion.parallel.layout import check_layout
from trillion.params import count_params
from trillion.plan import PlanError, Request, plan, v4_costs
from trillion.plan.hardware import Hardware
from trillion.plan.planner import candidate_layouts, evaluate

TINY = FLAVORS["tiny"]  # dim 64, 4 layers + MTP, 8 experts (3 x 64 x 32 params) top-2, vocab 512
TOY = Hardware(
    name="toy", label="toy chip", memory=10e6, bandwidth=1e9, flops={"bf16": 1e12, "fp8": 2e12},
    scale_up=1e8, scale_up_size=2, scale_out=1e7, sources={},
)
EXPERT = 3 * 64 * 32


def request(**kw):
    base = {"costs": v4_costs(TINY), "hardware": TOY, "devices": 4, "precision": "bf16", "context": 40, "dp": 2,
            "tp": 2, "mem_util": 1.0, "prefill_chunk": 16, "batch": 4}
    return Request(**{**base, **kw})


def test_memory_by_hand():
    p = plan(request())
    r = count_params(TINY)
    hash_table = 512 * 2 * 8
    all_bytes = 2 * r.total_with_mtp + hash_table  # bf16: 2 bytes a parameter, the int64 hash table
    experts = 2 * 5 * 8 * EXPERT  # 5 MoE blocks (4 + MTP)
    tp = 2 * (5 * (128 * 32 + 32 * 64 + 64 * 32 + 4) + 2 * 512 * 64)
    m = p.memory
    assert m.experts == 2 * experts / 8  # [M1] 8 experts over 4 ranks: 2 slots
    assert m.tp_split == tp / 2 and m.replicated == all_bytes - experts - tp
    state = kv_cost(TINY, 40).bytes_bf16 + kv_cost(TINY, 40).mtp_bytes_bf16
    assert m.state_per_sequence == state  # [M2]
    act = 8 * 4 * 64 + 4 * 512 / 2 + 4 * 2 * 64  # [M3] residual streams, logits shard, dispatch copies
    assert m.activation_per_token == act == 3584
    assert m.prefill_workspace == 16 * (act + 4 * (40 // 4))  # + fp32 indexer scores of 10 entries
    free = 10e6 - m.weights
    assert m.max_batch_per_group == math.floor(min((free - m.prefill_workspace) / state, free / (state + act)))
    assert (p.batch, m.batch_per_group, m.state) == (4, 2, 2 * state)  # 4 sequences over 2 dp groups


def test_decode_roofline_by_hand():
    p = plan(request())
    c, r = v4_costs(TINY), count_params(TINY)
    b = 2
    # [D1] weights read: tp share less the embedding, over tp; replicated; less the MTP block's own
    # (not drafting); the expert slots that get a token: 4 tokens choosing 2 of 8 experts each
    mtp_tp = 2 * (128 * 32 + 32 * 64 + 64 * 32 + 4)
    mtp_rep = 2 * r.mtp - mtp_tp - 2 * 8 * EXPERT
    dense = (c.weights["bf16"]["tp"] - 2 * 512 * 64) / 2 + c.weights["bf16"]["replicated"] - mtp_tp / 2 - mtp_rep
    hit = 1 - (1 - 2 / 8) ** 4
    experts = 2 * hit * 4 * EXPERT * 2  # 2 slots, 4 main layers, 2 bytes
    state = b * c.state_read_bytes(40, "bf16")
    assert p.decode.memory == pytest.approx((dense + experts + state) / 1e9, rel=1e-12)
    # [D2] FLOPs, all at the toy's bf16 rate (precision bf16)
    m_tp = 4 * (128 * 32 + 32 * 64 + 64 * 32) + 512 * 64
    m_rep = v4_matmul_params(TINY) - m_tp - 2 * EXPERT * 4
    attn = sum(v4_attention_flops(TINY, i, 40)[0] for i in range(4))
    index = sum(v4_attention_flops(TINY, i, 40)[1] for i in range(4))
    expert_flops = 4 * 2 / 4 * 2 * EXPERT * 4  # the instance's 4 tokens x top-2, a quarter on this rank
    flops = b * 2 * (m_tp / 2 + m_rep) + b * attn / 2 + b * index + expert_flops
    assert p.decode.compute == pytest.approx(flops / 1e12, rel=1e-12)
    # [D3] this rank dispatches b / tp = 1 token to 2 experts in 4 layers, 2 x 64 bf16 out and back;
    # a quarter of the copies stay here, a quarter cross the 2-device node, half leave it; the tp
    # all-reduce moves 2 (tp-1)/tp x b x dim x 2 bytes per layer inside the node
    copies = 1 * 2 * (2 * 64 + 2 * 64) * 4
    up = (copies / 4 + 2 * 0.5 * 2 * 64 * 2 * 4) / 1e8
    out = copies / 2 / 1e7
    assert p.decode.communication == pytest.approx(max(up, out), rel=1e-12)
    assert p.decode.time == max(p.decode.memory, p.decode.compute, p.decode.communication) == p.decode.memory
    assert p.decode.binding == "memory"
    # [D4]
    assert p.decode_tokens_per_s_device == pytest.approx(4 / p.decode.time / 4)
    assert p.decode_tokens_per_s_sequence == pytest.approx(1 / p.decode.time)


def test_prefill_and_ttft_by_hand():
    p = plan(request())
    c = v4_costs(TINY)
    m_tp = 4 * (128 * 32 + 32 * 64 + 64 * 32) + 512 * 64
    m_rep = v4_matmul_params(TINY) - m_tp - 2 * EXPERT * 4
    attn, index = c.prefill_attention_flops(40)
    # [P1] per prompt token of the instance: a dp group's rank does the dense work of half the tokens
    dense = (2 * (m_tp / 2 + m_rep) + attn / 40 / 2 + index / 40) / 2 / 1e12
    experts = 2 / 4 * 2 * EXPERT * 4 / 1e12
    assert p.prefill.compute == pytest.approx(dense + experts, rel=1e-12)
    copies = 2 * 256 * 4 / 4  # each rank dispatches a quarter of the tokens
    assert p.prefill.communication == pytest.approx(max((copies / 4 + 2 * 0.5 * 64 * 2 * 4 / 2) / 1e8,
                                                        copies / 2 / 1e7), rel=1e-12)
    assert p.prefill_tokens_per_s_device == pytest.approx(1 / (p.prefill.time * 4))
    # [T1] one 40-token prompt: its group computes the dense part and attention, every rank its experts
    group = 40 * 2 * (m_tp / 2 + m_rep) / 1e12 + attn / 2 / 1e12 + index / 1e12
    assert p.ttft.compute == pytest.approx(group + 40 * 2 / 4 * 2 * EXPERT * 4 / 1e12, rel=1e-12)
    assert p.ttft.memory == pytest.approx((3 * p.memory.weights + p.memory.state_per_sequence) / 1e9)


def test_mtp_drafts_emit_more_per_step_and_read_the_mtp_block():
    plain, mtp = plan(request()), plan(request(mtp=1, mtp_acceptance=0.8))
    assert plain.tokens_per_step == 1 and mtp.tokens_per_step == pytest.approx(1.8)
    assert mtp.decode.detail["weights_read_bytes"] > plain.decode.detail["weights_read_bytes"]
    two = plan(request(mtp=2, mtp_acceptance=0.5))
    assert two.tokens_per_step == pytest.approx(1 + 0.5 + 0.25)


def test_the_search_picks_a_layout_the_engine_accepts():
    big = Hardware(**{**TOY.__dict__, "memory": 1e9})
    req = Request(v4_costs(TINY), big, 8, precision="bf16", context=256)
    p = plan(req)
    lay = p.layout
    assert check_layout(TINY, dp=lay.dp, tp=lay.tp, world=lay.world) == []
    assert lay.tp <= big.scale_up_size and lay.world * lay.instances == 8
    # every plan the search could return is valid too, and the chosen one is the fastest per device
    plans = [x for x in (evaluate(req, *c) for c in candidate_layouts(req)) if not isinstance(x, str)]
    assert plans and all(check_layout(TINY, dp=x.layout.dp, tp=x.layout.tp, world=x.layout.world) == []
                         for x in plans)
    assert p.decode_tokens_per_s_device == max(x.decode_tokens_per_s_device for x in plans)
    pre = plan(Request(v4_costs(TINY), big, 8, precision="bf16", context=256, phase="prefill"))
    assert pre.prefill_tokens_per_s_device == max(x.prefill_tokens_per_s_device for x in plans)


def test_rejected_layouts_say_why():
    req = request(dp=None, tp=None, batch=None)  # evaluate(request, world, dp, tp)
    assert "does not divide the 8 routed experts" in evaluate(req, 3, 3, 1)
    assert "tp = 4 does not divide the 2 output groups" in evaluate(req, 4, 1, 4)
    one_per_node = request(hardware=Hardware(**{**TOY.__dict__, "scale_up_size": 1}))
    assert "tp = 2 spans more than one scale-up domain of 1 devices" in evaluate(one_per_node, 2, 1, 2)
    no_network = request(hardware=Hardware(**{**TOY.__dict__, "scale_out": None}))
    assert "toy chip has no scale-out network in the table beyond 2 devices" in evaluate(no_network, 4, 4, 1)
    assert not isinstance(evaluate(no_network, 2, 2, 1), str)


def test_bad_requests_are_refused_in_one_line():
    cases = [
        ({"context": TINY.max_seq_len + 1}, "context 4,097 tokens: tiny takes 1 to 4,096"),
        ({"batch": 10_000}, "batch 10,000 does not fit; at most"),
        ({"memory_small": True}, "fits no layout"),
        ({"phase": "train"}, "phase 'train'"),
        ({"precision": "fp16"}, "precision 'fp16'"),
        ({"devices": 0}, "devices = 0"),
        ({"mtp": 1, "mtp_acceptance": 1.5}, "acceptance"),
        ({"dp": 3, "tp": 1}, "does not divide 4 devices"),
    ]
    for changes, message in cases:
        if changes.pop("memory_small", False):
            changes["hardware"] = Hardware(**{**TOY.__dict__, "memory": 1e5})
        with pytest.raises(ValueError, match=message) as e:
            plan(request(**changes))
        assert "\n" not in str(e.value)
    cpu = Hardware(**{**TOY.__dict__, "name": "cpu"})
    with pytest.raises(PlanError, match="--devices 1, not 4"):
        plan(request(hardware=cpu))


def test_a_model_too_big_for_the_devices_says_what_would_be_needed():
    with pytest.raises(PlanError) as e:
        plan(Request(v4_costs(FLAVORS["v4-flash"]), TOY.__class__(**{**TOY.__dict__, "memory": 80e9}), 1))
    msg = str(e.value)
    assert "v4-flash at 1,048,576 tokens (release) on 1 x toy chip fits no layout" in msg
    assert "exceed the usable 72.0 GB" in msg
