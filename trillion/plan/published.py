"""Serving figures the field has published for DeepSeek-V3 / R1, planned on the same hardware and
layout: each figure must sit below the planned bound, and achieved / bound says how close a
production system gets to the roofline (docs/plan.md, "Against published figures").

* DeepSeek, "Day 6: One More Thing, DeepSeek-V3/R1 Inference System Overview"
  (deepseek-ai/open-infra-index, 202502OpenSourceWeek/day_6_one_more_thing_deepseekV3R1_inference_
  system_overview.md): H800, FP8 matmuls and dispatch, BF16 MLA and combine; prefill units of 4 nodes
  (routed experts EP32, MLA and shared expert DP32, 32 redundant experts, 9 routed experts per GPU),
  decode units of 18 nodes (EP144 / DP144, 32 redundant, 2 routed experts per GPU); per H800 node
  ~73.7k input tokens/s (including on-disk cache hits: 56.3% of all input tokens) or ~14.8k output
  tokens/s; average KV length per output token 4,989; output speed 20-22 tokens/s per sequence.
* Zuo et al., "Serving Large Language Models on Huawei CloudMatrix384" (arXiv 2506.12708): DeepSeek-R1,
  INT8 weights and activations on 910C; prefill 16 NPUs (32 dies, EP32), 4K-token prompts, 6,688
  tokens/s per NPU (perfect expert balance); decode 160 NPUs (320 dies, EP320: 256 routed + 32
  redundant + 32 shared-expert dies, one expert per die), batch 96 per NPU at 4K KV length, MTP with
  one draft at ~70% acceptance, TPOT 49.4 ms, 1,943 tokens/s per NPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from .costs import v3_costs
from .hardware import get_hardware
from .planner import Plan, Request, evaluate

DEEPSEEK = ("DeepSeek, Day 6 inference system overview (deepseek-ai/open-infra-index, "
            "202502OpenSourceWeek/day_6_one_more_thing_deepseekV3R1_inference_system_overview.md)")
CLOUDMATRIX = "Zuo et al., Serving Large Language Models on Huawei CloudMatrix384, arXiv 2506.12708, sec. 5"


@dataclass(frozen=True)
class Published:
    key: str
    system: str
    source: str
    phase: str  # "prefill" (input tokens/s) or "decode" (output tokens/s)
    hardware: str
    devices: int  # one deployment unit
    dp: int
    tp: int
    redundant_experts: int
    precision: str
    context: int
    figure: float  # tokens/s per device, as published
    computed_share: float = 1.0  # the share of those tokens the devices computed (not cache hits)
    batch_per_device: int | None = None  # the published (or derived) decode batch
    mtp: int = 0
    mtp_acceptance: float = 0.85
    conditions: str = ""

    @property
    def computed(self) -> float:
        return self.figure * self.computed_share

    def request(self, batch: int | None = None) -> Request:
        return Request(
            v3_costs(), get_hardware(self.hardware), self.devices, precision=self.precision, context=self.context,
            batch=batch, phase=self.phase, dp=self.dp, tp=self.tp, redundant_experts=self.redundant_experts,
            mtp=self.mtp, mtp_acceptance=self.mtp_acceptance,
        )


PUBLISHED = (
    Published(
        "deepseek-h800-prefill", "DeepSeek V3/R1 service, prefill", DEEPSEEK, "prefill", "h800", 32, 32, 1, 32,
        "fp8", 4096, figure=73_700 / 8, computed_share=1 - 0.563,
        conditions="73.7k input tokens/s per 8-GPU node including 56.3% on-disk cache hits; EP32 / DP32 over "
        "4 nodes; prompt length not published: planned at 4K, the length of DeepSeek's published profile",
    ),
    Published(
        "deepseek-h800-decode", "DeepSeek V3/R1 service, decode", DEEPSEEK, "decode", "h800", 144, 144, 1, 32,
        "fp8", 4989, figure=14_800 / 8, batch_per_device=88,
        conditions="14.8k output tokens/s per 8-GPU node at 4,989 average KV tokens, 20-22 tokens/s per "
        "sequence (batch ~1,850 / 21 = 88 per GPU, derived); EP144 / DP144 over 18 nodes; MTP not stated",
    ),
    Published(
        "cloudmatrix-prefill", "CloudMatrix-Infer, prefill", CLOUDMATRIX, "prefill", "910c", 16, 16, 1, 32,
        "int8", 4096, figure=6688,
        conditions="INT8, 4K-token prompts, 16 NPUs (EP32 over 32 dies), perfect expert balance",
    ),
    Published(
        "cloudmatrix-decode", "CloudMatrix-Infer, decode", CLOUDMATRIX, "decode", "910c", 160, 160, 1, 64,
        "int8", 4096, figure=1943, batch_per_device=96, mtp=1, mtp_acceptance=0.7,
        conditions="INT8, batch 96 per NPU at 4K KV, TPOT 49.4 ms, MTP 1 draft at ~70% acceptance; EP320 over "
        "160 NPUs: planned as 160 devices of two expert slots (the 32 shared-expert dies counted as replicas)",
    ),
)


@dataclass(frozen=True)
class Comparison:
    published: Published
    bound: Plan  # the largest batch that fits
    at_batch: Plan | None  # at the published batch, when known

    def rate(self, p: Plan) -> float:
        return p.prefill_tokens_per_s_device if self.published.phase == "prefill" else p.decode_tokens_per_s_device

    @property
    def ratio(self) -> float:
        """Achieved (computed tokens) / planned bound at the largest batch."""
        return self.published.computed / self.rate(self.bound)

    @property
    def ratio_at_batch(self) -> float | None:
        return self.published.computed / self.rate(self.at_batch) if self.at_batch else None


def _plan(p: Published, batch: int | None) -> Plan:
    result = evaluate(p.request(batch), p.devices, p.dp, p.tp)
    if isinstance(result, Plan):
        return result
    raise ValueError(f"{p.key}: the published layout and batch do not fit the plan: {result}")


def compare(p: Published) -> Comparison:
    """Plan the published layout at its largest batch and, where known, at its published batch."""
    at = _plan(p, p.batch_per_device * p.devices) if p.batch_per_device else None
    return Comparison(p, _plan(p, None), at)


__all__ = ["PUBLISHED", "Comparison", "Published", "compare"]
