"""The deployment plan: memory per device, the layout that fits, the largest batch, and the decode,
prefill and time-to-first-token rooflines. Pure arithmetic on `ModelCosts` and `Hardware`; every
formula is written out in docs/plan.md under the name the code gives it ([M1] ... [T1]).

A deployment is `instances` identical copies of one instance of `world` devices. Inside an instance
attention is data parallel over dp groups and tensor parallel over the tp ranks of a group; routed
experts are expert parallel over all `world` ranks (ep = world). The layout must pass
`trillion.parallel.layout.check_layout`, the validity check the distributed engine uses too.

Each rate is a roofline: a step takes the longest of its memory time (bytes read / HBM bandwidth),
compute time (FLOPs / dense peak, per format) and communication time (bytes sent / link bandwidth),
assuming the three overlap perfectly (as DeepSeek's dual micro-batch pipeline aims to). So the
rates are upper bounds and the times lower bounds; docs/plan.md compares them with what services
achieve.

Legend: N context, b sequences per dp group, q tokens per sequence per step (1 + MTP drafts),
E routed experts, R redundant, k top-k, L MoE layers, W world, S(N) state bytes per sequence.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError
from ..parallel.layout import check_layout
from .costs import COMPUTE_FORMAT, WEIGHT_FORMATS, ModelCosts, check_precision, state_precision
from .hardware import Hardware

PHASES = ("decode", "prefill")
SCALE_BLOCK = 128  # 8-bit dispatch carries one float32 scale per 128 values (DeepEP's FP8 dispatch)


class PlanError(UserError):
    """A request no layout can serve; the message says why (one line)."""


@dataclass(frozen=True)
class Request:
    costs: ModelCosts
    hardware: Hardware
    devices: int
    precision: str = "release"
    context: int = 2**20
    batch: int | None = None  # sequences in flight over all devices; None = the largest that fits
    phase: str = "decode"  # what the layout search maximises per device
    dp: int | None = None
    tp: int | None = None
    redundant_experts: int = 0
    mtp: int = 0  # MTP draft tokens per decode step
    mtp_acceptance: float = 0.85  # DeepSeek-V3 report: 85-90% for the second token
    mem_util: float = 0.9  # share of device memory the plan may fill
    prefill_chunk: int = 4096  # prompt tokens per dp group per prefill step (sizes the workspace)


@dataclass(frozen=True)
class Layout:
    world: int
    dp: int
    tp: int
    instances: int
    redundant_experts: int
    expert_slots: int  # routed-expert slots per device per MoE layer


@dataclass(frozen=True)
class Memory:
    """Bytes per device ([M1]-[M4])."""

    experts: float
    tp_split: float
    replicated: float
    weights: float
    state_per_sequence: float
    activation_per_token: float
    prefill_workspace: float
    usable: float
    capacity: float
    max_batch_per_group: int  # [B1]
    batch_per_group: int = 0
    state: float = 0.0
    workspace: float = 0.0

    @property
    def total(self) -> float:
        return self.weights + self.state + self.workspace


@dataclass(frozen=True)
class Roofline:
    """Seconds per unit of work under each bound; the largest binds."""

    memory: float
    compute: float
    communication: float
    detail: dict[str, float] = field(default_factory=dict)

    @property
    def time(self) -> float:
        return max(self.memory, self.compute, self.communication)

    @property
    def binding(self) -> str:
        return max(("memory", self.memory), ("compute", self.compute), ("communication", self.communication),
                   key=lambda kv: kv[1])[0]


@dataclass(frozen=True)
class Plan:
    model: str
    hardware: str
    devices: int
    precision: str
    context: int
    layout: Layout
    memory: Memory
    batch: int  # sequences in flight over all devices
    decode: Roofline  # per step
    tokens_per_step: float  # emitted per sequence per step [D5]
    decode_tokens_per_s_device: float
    decode_tokens_per_s_sequence: float
    prefill: Roofline  # per prompt token of the instance
    prefill_tokens_per_s_device: float
    ttft: Roofline  # one prompt of `context` tokens on an idle instance
    formats: dict[str, str]  # which throughput each kind of work ran at
    notes: tuple[str, ...] = ()

    @property
    def decode_tokens_per_s(self) -> float:
        return self.decode_tokens_per_s_device * self.devices

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for key in ("decode", "prefill", "ttft"):
            r = getattr(self, key)
            d[key].update(time=r.time, binding=r.binding)
        d["memory"]["total"] = self.memory.total
        d["decode_tokens_per_s"] = self.decode_tokens_per_s
        return d


# ---------------------------------------------------------------------------------- pieces


def activation_bytes(costs: ModelCosts, tp: int) -> float:
    """[M3] Live activations per token in flight: the fp32 residual streams in and out of a block
    (2 x 4 x hc_mult x dim), the fp32 logits of its vocab shard (4 x vocab / tp) and the bf16 dispatch
    and combine copies of its k routed experts (2 x 2 x k x dim)."""
    return 8 * costs.hc_mult * costs.dim + 4 * costs.vocab_size / tp + 4 * costs.top_k * costs.dim


def dispatch_bytes(costs: ModelCosts, precision: str) -> float:
    """[C1] Bytes one (token, expert) copy sends: the dispatch at the matmul width (8-bit formats: one
    byte a value + a float32 scale per 128, DeepEP's FP8 dispatch) plus the bf16 combine back."""
    d = costs.dim
    if precision == "fp32":
        return 8 * d
    dispatch = 2 * d if precision == "bf16" else d + 4 * math.ceil(d / SCALE_BLOCK)
    return dispatch + 2 * d


def link_time(req: Request, world: int, copies: float, allreduce: float) -> tuple[float, float, float]:
    """[C2] (scale-up seconds, scale-out seconds, time) for `copies` bytes of all-to-all traffic a device
    sends, spread uniformly over the `world` ranks, plus `allreduce` bytes inside its tp group."""
    if world == 1:
        return 0.0, 0.0, 0.0
    hw = req.hardware
    node = min(hw.scale_up_size, world)
    up_bytes = copies * (node - 1) / world + allreduce
    out_bytes = copies * (world - node) / world
    up = up_bytes / hw.scale_up if up_bytes else 0.0
    out = out_bytes / hw.scale_out if out_bytes else 0.0
    return up, out, max(up, out)


def formats(req: Request) -> dict[str, tuple[float, str]]:
    """Peak FLOP/s and the format actually used for dense matmuls, routed experts, attention and
    the indexer ([D2])."""
    dense_fmt, expert_fmt = (COMPUTE_FORMAT[f] for f in WEIGHT_FORMATS[req.precision])
    if req.costs.family == "v3" and req.precision == "release":
        expert_fmt = "fp8"  # V3's release keeps its experts in FP8
    hw = req.hardware
    attention = "fp32" if req.precision == "fp32" else "bf16"
    return {"dense": hw.peak(dense_fmt), "experts": hw.peak(expert_fmt), "attention": hw.peak(attention),
            "indexer": hw.peak(dense_fmt)}


def memory_plan(req: Request, lay: Layout) -> Memory:
    """[M1]-[M4], [B1]: bytes per device and the most sequences a dp group holds at the context."""
    c, prec = req.costs, req.precision
    w = c.weights[prec]
    experts = lay.expert_slots * w["expert"] / c.n_routed_experts
    tp_split = w["tp"] / lay.tp
    weights = experts + tp_split + w["replicated"]
    state = c.state_bytes(req.context, state_precision(prec))
    act = activation_bytes(c, lay.tp)
    prefill_ws = req.prefill_chunk * (act + 4 * c.indexer_scores(req.context))
    usable = req.mem_util * req.hardware.memory
    q = 1 + req.mtp
    free = usable - weights
    b_max = max(0, math.floor(min((free - prefill_ws) / state, free / (state + q * act))))
    return Memory(experts, tp_split, w["replicated"], weights, state, act, prefill_ws, usable,
                  req.hardware.memory, b_max)


def p_hit(tokens: float, k: int, slots: int) -> float:
    """[D1] Chance an expert slot receives at least one of `tokens` tokens, each choosing k of `slots`
    uniformly (routing assumed balanced)."""
    return 1.0 - (1.0 - k / slots) ** tokens


def decode_roofline(req: Request, lay: Layout, mem: Memory, b: int) -> Roofline:
    """[D1]-[D4] Seconds per decode step with b sequences per dp group."""
    c, prec, hw, d = req.costs, req.precision, req.hardware, req.mtp
    w, mw, q = c.weights[prec], c.mtp_weights[prec], 1 + d
    slots = c.n_routed_experts + lay.redundant_experts
    tokens = lay.dp * b * q  # the instance's main-model tokens this step
    per_expert = (w["expert"] - mw["expert"]) / c.n_routed_experts
    mtp_per_expert = mw["expert"] / c.n_routed_experts
    # [D1] bytes read: weights (less the embedding's rows not looked up, less the MTP block when it
    # does not draft) + the experts that receive a token + every sequence's attention state
    dense = (w["tp"] - c.embedding[prec]) / lay.tp + w["replicated"]
    if d == 0:
        dense -= mw["tp"] / lay.tp + mw["replicated"]
    read = dense + lay.expert_slots * p_hit(tokens, c.top_k, slots) * per_expert
    sprec = state_precision(prec)
    state = b * c.state_read_bytes(req.context, sprec)
    if d:
        read += lay.expert_slots * p_hit(lay.dp * b * d, c.top_k, slots) * mtp_per_expert
        state += b * d * c.state_read_bytes(req.context, sprec, mtp=True)
    t_mem = (read + state) / hw.bandwidth
    # [D2] FLOPs: the group's tokens through the dense weights (tp-split part divided), the attention
    # over the state (heads divided by tp, the indexer whole), this rank's share of routed-expert work
    f = formats(req)
    dense_flops = b * q * 2 * (c.matmul["tp"] / lay.tp + c.matmul["replicated"]) + b * d * 2 * c.mtp_matmul
    attn, index = c.attention_flops(req.context)
    attn_flops, index_flops = b * q * attn / lay.tp, b * q * index
    if d:
        m_attn, m_index = c.attention_flops(req.context, mtp=True)
        attn_flops += b * d * m_attn
        index_flops += b * d * m_index
    expert_flops = tokens * c.top_k / lay.world * 2 * c.expert_params * c.n_moe_layers
    t_compute = (dense_flops / f["dense"][0] + expert_flops / f["experts"][0] + attn_flops / f["attention"][0]
                 + index_flops / f["indexer"][0])
    # [D3] all-to-all: this rank dispatches its 1/tp share of the group's tokens to k experts per MoE
    # layer and gets the outputs back; tp > 1 adds an all-reduce of the attention output per layer
    moe_passes = c.n_moe_layers * q + c.n_mtp_layers * d
    copies = b / lay.tp * c.top_k * dispatch_bytes(c, prec) * moe_passes
    allreduce = 2 * (lay.tp - 1) / lay.tp * b * q * c.dim * 2 * c.n_layers
    up, out, t_comm = link_time(req, lay.world, copies, allreduce)
    return Roofline(t_mem, t_compute, t_comm, {
        "weights_read_bytes": read, "state_read_bytes": state, "dense_flops": dense_flops,
        "expert_flops": expert_flops, "attention_flops": attn_flops, "indexer_flops": index_flops,
        "all_to_all_bytes": copies, "allreduce_bytes": allreduce, "scale_up_s": up, "scale_out_s": out,
    })


def prefill_roofline(req: Request, lay: Layout, mem: Memory) -> Roofline:
    """[P1] Seconds per prompt token of the instance, prompts of `context` tokens, every device busy."""
    c, prec, hw, n = req.costs, req.precision, req.hardware, req.context
    f = formats(req)
    attn, index = c.prefill_attention_flops(n)
    dense = 2 * (c.matmul["tp"] / lay.tp + c.matmul["replicated"] + (c.mtp_matmul if req.mtp else 0))
    compute = (dense / f["dense"][0] + attn / n / lay.tp / f["attention"][0] + index / n / f["indexer"][0]) / lay.dp
    expert = c.top_k / lay.world * 2 * c.expert_params * c.n_moe_layers / f["experts"][0]
    sprec = state_precision(prec)
    t_mem = (mem.weights / (lay.dp * req.prefill_chunk) + c.state_bytes(n, sprec) / n / lay.dp) / hw.bandwidth
    copies = c.top_k * dispatch_bytes(c, prec) * c.n_moe_layers / lay.world
    allreduce = 2 * (lay.tp - 1) / lay.tp * c.dim * 2 * c.n_layers / lay.dp
    _, _, t_comm = link_time(req, lay.world, copies, allreduce)
    return Roofline(t_mem, compute + expert, t_comm, {"dense_s": compute, "expert_s": expert})


def ttft_roofline(req: Request, lay: Layout, mem: Memory) -> Roofline:
    """[T1] One prompt of `context` tokens on an idle instance: its dp group (tp devices) runs the
    dense layers and attention, every device its share of the experts."""
    c, prec, hw, n = req.costs, req.precision, req.hardware, req.context
    f = formats(req)
    attn, index = c.prefill_attention_flops(n)
    dense = n * 2 * (c.matmul["tp"] / lay.tp + c.matmul["replicated"])
    group = dense / f["dense"][0] + attn / lay.tp / f["attention"][0] + index / f["indexer"][0]
    expert = n * c.top_k / lay.world * 2 * c.expert_params * c.n_moe_layers / f["experts"][0]
    steps = math.ceil(n / req.prefill_chunk)
    t_mem = (steps * mem.weights + c.state_bytes(n, state_precision(prec))) / hw.bandwidth
    copies = n / lay.tp * c.top_k * dispatch_bytes(c, prec) * c.n_moe_layers
    allreduce = 2 * (lay.tp - 1) / lay.tp * n * c.dim * 2 * c.n_layers
    _, _, t_comm = link_time(req, lay.world, copies, allreduce)
    return Roofline(t_mem, group + expert, t_comm, {"group_s": group, "expert_s": expert})


# ---------------------------------------------------------------------------------- the search


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def candidate_layouts(req: Request) -> list[tuple[int, int, int]]:
    """(world, dp, tp) triples: world divides the devices; dp and tp as pinned, else every split."""
    out = []
    for world in _divisors(req.devices):
        for tp in _divisors(world):
            if (req.tp is None or tp == req.tp) and (req.dp is None or world // tp == req.dp):
                out.append((world, world // tp, tp))
    return out


def evaluate(req: Request, world: int, dp: int, tp: int) -> Plan | str:
    """The plan of one layout, or why it cannot serve the request."""
    c, hw = req.costs, req.hardware
    problems = check_layout(c.cfg, dp=dp, tp=tp, world=world, redundant_experts=req.redundant_experts)
    if problems:
        return "; ".join(problems)
    if tp > hw.scale_up_size:
        return f"tp = {tp} spans more than one scale-up domain of {hw.scale_up_size} devices"
    if world > hw.scale_up_size and hw.scale_out is None:
        return f"{hw.label} has no scale-out network in the table beyond {hw.scale_up_size} devices"
    slots = (c.n_routed_experts + req.redundant_experts) // world
    lay = Layout(world, dp, tp, req.devices // world, req.redundant_experts, slots)
    mem = memory_plan(req, lay)
    gb = 1e9
    if mem.max_batch_per_group < 1:
        return (f"dp={dp} x tp={tp}: weights {mem.weights / gb:,.1f} GB + one sequence's state "
                f"{mem.state_per_sequence / gb:,.2f} GB + workspace {mem.prefill_workspace / gb:,.2f} GB "
                f"exceed the usable {mem.usable / gb:,.1f} GB per device")
    if req.batch is None:
        b = mem.max_batch_per_group
        batch = b * dp * lay.instances
    else:
        b = math.ceil(math.ceil(req.batch / lay.instances) / dp)
        batch = req.batch
        if b > mem.max_batch_per_group:
            return (f"dp={dp} x tp={tp}: batch {req.batch} puts {b} sequences on a dp group; at most "
                    f"{mem.max_batch_per_group} fit")
    act = b * (1 + req.mtp) * mem.activation_per_token
    mem = dataclasses.replace(mem, batch_per_group=b, state=b * mem.state_per_sequence,
                              workspace=max(act, mem.prefill_workspace))
    dec = decode_roofline(req, lay, mem, b)
    a = req.mtp_acceptance
    per_step = sum(a**i for i in range(req.mtp + 1))  # [D5] 1 + a + ... + a^d tokens per sequence
    pre = prefill_roofline(req, lay, mem)
    f = formats(req)
    notes = list(c.notes) + list(hw.notes)
    asked = dict(zip(("dense", "experts"), (COMPUTE_FORMAT[x] for x in WEIGHT_FORMATS[req.precision])))
    for kind, fmt in asked.items():
        if f[kind][1] != fmt and not (c.family == "v3" and req.precision == "release"):
            what = "dense" if kind == "dense" else "routed-expert"
            notes.append(f"{what} weights ({fmt}) run at the {f[kind][1]} rate: {hw.label} lists no {fmt} throughput")
    return Plan(
        model=c.name, hardware=hw.name, devices=req.devices, precision=req.precision, context=req.context,
        layout=lay, memory=mem, batch=batch, decode=dec, tokens_per_step=per_step,
        decode_tokens_per_s_device=batch * per_step / dec.time / req.devices,
        decode_tokens_per_s_sequence=per_step / dec.time,
        prefill=pre, prefill_tokens_per_s_device=1 / (pre.time * world),
        ttft=ttft_roofline(req, lay, mem), formats={k: v[1] for k, v in f.items()}, notes=tuple(notes),
    )


def validate(req: Request) -> None:
    c = req.costs
    check_precision(req.precision)
    if req.phase not in PHASES:
        raise PlanError(f"phase {req.phase!r}: expected one of {', '.join(PHASES)}")
    if req.devices < 1:
        raise PlanError(f"devices = {req.devices}; need at least one")
    if req.hardware.name == "cpu" and req.devices != 1:
        raise PlanError(f"--hardware cpu plans this one machine: --devices 1, not {req.devices}")
    if not 1 <= req.context <= c.max_context:
        raise PlanError(f"context {req.context:,} tokens: {c.name} takes 1 to {c.max_context:,} (its max_seq_len)")
    if req.batch is not None and req.batch < 1:
        raise PlanError(f"batch = {req.batch}; need at least one sequence")
    for name in ("dp", "tp"):
        v = getattr(req, name)
        if v is not None and v < 1:
            raise PlanError(f"{name} = {v}; it must be at least 1")
    if req.mtp < 0 or not 0 <= req.mtp_acceptance <= 1:
        raise PlanError(f"mtp = {req.mtp}, acceptance {req.mtp_acceptance}: drafts >= 0, acceptance in [0, 1]")
    if not 0 < req.mem_util <= 1 or req.prefill_chunk < 1:
        raise PlanError(f"mem_util {req.mem_util} must be in (0, 1] and prefill_chunk {req.prefill_chunk} >= 1")


def plan(req: Request) -> Plan:
    """The best layout for the request: most decode (or prefill, per `phase`) tokens/s per device, then
    the smallest instance, then the smallest tp. Raises PlanError naming why nothing fits."""
    validate(req)
    plans, reasons = [], []
    for world, dp, tp in candidate_layouts(req):
        result = evaluate(req, world, dp, tp)
        (plans if isinstance(result, Plan) else reasons).append(result)
    if not plans:
        where = f"{req.costs.name} at {req.context:,} tokens ({req.precision}) on {req.devices} x {req.hardware.label}"
        if not reasons:
            raise PlanError(f"{where}: dp={req.dp} x tp={req.tp} does not divide {req.devices} devices")
        if req.batch is not None and any("at most" in r for r in reasons):
            free = dataclasses.replace(req, batch=None)
            fitting = [x for x in (evaluate(free, *c) for c in candidate_layouts(free)) if isinstance(x, Plan)]
            best = max(fitting, key=lambda x: x.batch)  # the most that fits, over every layout
            raise PlanError(f"{where}: batch {req.batch:,} does not fit; at most {best.batch:,} sequences do "
                            f"(dp={best.layout.dp} x tp={best.layout.tp})")
        fits = [r for r in reasons if "exceed the usable" in r]
        raise PlanError(f"{where} fits no layout: {(fits or reasons)[-1]}")
    rate = (lambda p: p.decode_tokens_per_s_device) if req.phase == "decode" else (
        lambda p: p.prefill_tokens_per_s_device)
    return max(plans, key=lambda p: (rate(p), -p.layout.world, -p.layout.tp))


__all__ = [
    "PHASES",
    "Layout",
    "Memory",
    "Plan",
    "PlanError",
    "Request",
    "Roofline",
    "activation_bytes",
    "candidate_layouts",
    "decode_roofline",
    "dispatch_bytes",
    "evaluate",
    "memory_plan",
    "p_hit",
    "plan",
    "prefill_roofline",
    "ttft_roofline",
    "validate",
]
