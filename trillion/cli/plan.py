"""`trillion plan MODEL --hardware NAME --devices N [...]`: a deployment plan (memory per device,
layout, largest batch, decode / prefill / time-to-first-token rooflines), and `trillion plan
--published`: the published V3/R1 serving figures against their planned bounds.

A thin wrapper over `trillion.plan`; formulas and sources in docs/plan.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from ..errors import UserError
from ..flavors import FLAVORS
from ..kvcost import V3Config, parse_tokens
from ..plan import HARDWARE, PRECISIONS, Request, costs_for, get_hardware, plan
from ..plan.planner import PHASES
from ..plan.published import PUBLISHED, compare
from ..plan.render import comparison_table, render
from .params import resolve_config

V3_NAME = "v3"  # DeepSeek-V3 / R1 (671B): the model of the published serving figures


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "plan",
        help="deployment plan: memory per device, layout, largest batch, decode/prefill rooflines",
        description="Plan serving a model on N devices of a kind: bytes per device (weights at the precision, "
        "attention state per sequence, activations), the dp x tp attention / ep expert layout that fits, the "
        "largest batch at the context, decode tokens/s per device and per sequence (memory, compute and "
        "all-to-all bounds; the largest binds), prefill tokens/s and the time to first token. "
        "--published compares DeepSeek's and Huawei's published V3/R1 figures with their planned bounds. "
        "Formulas and hardware sources: docs/plan.md.",
    )
    p.add_argument("model", nargs="?", metavar="MODEL",
                   help=f"a flavor ({', '.join(FLAVORS)}), a checkpoint folder or config.json, or {V3_NAME!r} "
                   "(DeepSeek-V3/R1)")
    p.add_argument("--hardware", metavar="NAME", help=f"one of {', '.join([*HARDWARE, 'cpu'])}")
    p.add_argument("--devices", "-n", type=int, default=1, metavar="N", help="devices in all (default 1)")
    p.add_argument("--precision", default="release", choices=PRECISIONS,
                   help="weight format of the linears (release = FP8 + MXFP4 experts; default release)")
    p.add_argument("--context", type=_tokens, default=None, metavar="N",
                   help="tokens per sequence: 4096, 128K, 1M (default: the model's longest, 1M for V4)")
    p.add_argument("--batch", "-b", type=int, default=None, metavar="B",
                   help="sequences in flight over all devices (default: the largest that fits)")
    p.add_argument("--phase", choices=PHASES, default="decode", help="what the layout search maximises")
    p.add_argument("--dp", type=int, default=None, help="pin the data-parallel attention groups per instance")
    p.add_argument("--tp", type=int, default=None, help="pin the tensor-parallel ranks per group")
    p.add_argument("--redundant-experts", type=int, default=0, metavar="R",
                   help="extra replicas of routed experts per layer (default 0, as the engine runs)")
    p.add_argument("--mtp", type=int, default=0, metavar="D", help="MTP draft tokens per decode step")
    p.add_argument("--mtp-acceptance", type=float, default=0.85, help="acceptance of each draft (default 0.85)")
    p.add_argument("--mem-util", type=float, default=0.9, help="share of device memory to fill (default 0.9)")
    p.add_argument("--prefill-chunk", type=int, default=4096, help="prompt tokens per dp group per prefill step")
    p.add_argument("--bandwidth", type=float, default=None, metavar="GB/S",
                   help="memory bandwidth to plan with (cpu: instead of measuring it)")
    p.add_argument("--flops", type=float, default=None, metavar="GFLOP/S",
                   help="cpu: float32 matmul rate instead of measuring it")
    p.add_argument("--published", action="store_true",
                   help="the published V3/R1 serving figures against their planned bounds")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.set_defaults(func=run)


def _tokens(text: str) -> int:
    try:
        return parse_tokens(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def resolve_model(spec: str):
    return V3Config() if spec == V3_NAME else resolve_config(spec)


def run(args: argparse.Namespace) -> int:
    if args.published:
        comparisons = [compare(p) for p in PUBLISHED]
        if args.json:
            print(json.dumps([{"published": dataclasses.asdict(c.published), "ratio": c.ratio,
                               "ratio_at_batch": c.ratio_at_batch, "bound": c.bound.to_dict()}
                              for c in comparisons], indent=2))
        else:
            print(comparison_table(comparisons))
        return 0
    if not args.model or not args.hardware:
        raise UserError("give a MODEL and --hardware NAME (or --published)")
    gb = lambda x: None if x is None else x * 1e9
    hw = get_hardware(args.hardware, bandwidth=gb(args.bandwidth), flops=gb(args.flops))
    costs = costs_for(resolve_model(args.model))
    req = Request(
        costs, hw, args.devices, precision=args.precision, context=args.context or costs.max_context,
        batch=args.batch, phase=args.phase, dp=args.dp, tp=args.tp, redundant_experts=args.redundant_experts,
        mtp=args.mtp, mtp_acceptance=args.mtp_acceptance, mem_util=args.mem_util, prefill_chunk=args.prefill_chunk,
    )
    result = plan(req)
    if args.json:
        print(json.dumps({**result.to_dict(), "hardware_figures": dataclasses.asdict(hw)}, indent=2))
    else:
        print(render(result, hw))
    return 0
