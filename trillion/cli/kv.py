"""`trillion kv FLAVOR_OR_PATH --context N [--batch B] [--json]`: attention-state bytes and decode
FLOPs of one sequence (or B) at N tokens of context, against DeepSeek-V3.2.

A thin wrapper over `trillion.kvcost.kv_cost`; the formulas and conventions are in docs/kv.md.
"""

from __future__ import annotations

import argparse
import json

from ..errors import UserError
from ..flavors import FLAVORS
from ..kvcost import (
    GROUPS,
    PART_LABELS,
    PARTS,
    V32,
    KvCost,
    format_bytes,
    format_flops,
    format_tokens,
    kv_cost,
    parse_tokens,
)
from .params import resolve_config


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "kv",
        help="attention-state bytes and decode FLOPs at a context length, vs DeepSeek-V3.2",
        description="Bytes of attention state one sequence holds at N tokens of context (window ring, "
        "compressed entries, indexer keys, compressor state; by layer type; at V4's release storage "
        "precision and at bf16) and the FLOPs of decoding its next token, next to DeepSeek-V3.2 (671B, "
        "MLA + DSA) at the same N. Formulas: docs/kv.md.",
    )
    p.add_argument("model", metavar="FLAVOR_OR_PATH",
                   help=f"a flavor ({', '.join(FLAVORS)}), a shipped model (demo), a checkpoint folder "
                   "holding config.json, or the config.json itself")
    p.add_argument("--context", "-n", required=True, type=_tokens, metavar="N",
                   help="tokens of context: 4096, 128K, 1M (K = 1024, M = 1024^2)")
    p.add_argument("--batch", "-b", type=int, default=1, metavar="B",
                   help="sequences of N tokens each: bytes and FLOPs are multiplied by B (default 1)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.set_defaults(func=run)


def _tokens(text: str) -> int:
    try:
        return parse_tokens(text)
    except ValueError as e:  # argparse prints an ArgumentTypeError's own message
        raise argparse.ArgumentTypeError(str(e)) from None


def run(args: argparse.Namespace) -> int:
    if args.batch < 1:
        raise UserError(f"--batch {args.batch}: need at least one sequence")
    cost = kv_cost(resolve_config(args.model), args.context).scaled(args.batch)
    if args.json:
        print(json.dumps({**cost.to_dict(), "batch": args.batch}, indent=2))
    else:
        print(render(cost, args.batch))
    return 0


def render(c: KvCost, batch: int = 1) -> str:
    """The human-readable table."""
    who = "one sequence" if batch == 1 else f"{batch} sequences"
    lines = [
        (f"{c.name or 'model'}: attention state of {who} at N = {c.n_tokens:,} tokens "
        f"({format_tokens(c.n_tokens)}), and the FLOPs of decoding the next token"),
        "",
        f"  {'layers':<14}{'component':<30}{'release':>16}{'bf16':>16}",
    ]
    for g in GROUPS:
        n = c.layers[g]
        if not n:
            continue
        label = f"{g} x{n}" if g != "mtp" else f"MTP x{n}"
        parts = [p for p in PARTS if c.release[g][p] or c.bf16[g][p]]
        for i, part in enumerate(parts):
            lines.append(f"  {label if i == 0 else '':<14}{PART_LABELS[part]:<30}"
                         f"{format_bytes(c.release[g][part]):>16}{format_bytes(c.bf16[g][part]):>16}")
        lines.append(f"  {'':<14}{'sum':<30}{format_bytes(sum(c.release[g].values())):>16}"
                     f"{format_bytes(sum(c.bf16[g].values())):>16}")
    lines += [
        "",
        f"  {'V4 main layers':<44}{format_bytes(c.bytes):>16}{format_bytes(c.bytes_bf16):>16}",
        f"  {'V4 MTP blocks':<44}{format_bytes(c.mtp_bytes):>16}{format_bytes(c.mtp_bytes_bf16):>16}",
        (f"  {'V4 main + MTP':<44}{format_bytes(c.bytes + c.mtp_bytes):>16}"
        f"{format_bytes(c.bytes_bf16 + c.mtp_bytes_bf16):>16}"),
        (f"  {f'V3.2 ({V32.n_layers} layers: MLA latent + indexer keys)':<44}{format_bytes(c.v32_bytes):>16}"
        f"{format_bytes(c.v32_bytes_bf16):>16}"),
        f"  {'ratio V4 / V3.2 (main layers)':<44}{c.bytes_ratio:>16.1%}{c.bytes_ratio_bf16:>16.1%}",
        "",
        f"  {'FLOPs per decoded token' + (' (x batch)' if batch > 1 else ''):<44}{'V4':>16}{'V3.2':>16}",
        (f"  {'weights (2 x matmul params)':<44}{format_flops(c.flops_breakdown['weights']):>16}"
        f"{format_flops(c.v32_flops_breakdown['weights']):>16}"),
    ]
    v4_attn = sum(v for k, v in c.flops_breakdown.items() if k.startswith("attention_"))
    lines += [
        (f"  {'attention':<44}{format_flops(v4_attn):>16}"
        f"{format_flops(c.v32_flops_breakdown['attention']):>16}"),
        (f"  {'indexer':<44}{format_flops(c.flops_breakdown['indexer']):>16}"
        f"{format_flops(c.v32_flops_breakdown['indexer']):>16}"),
        f"  {'total':<44}{format_flops(c.flops):>16}{format_flops(c.v32_flops):>16}",
        f"  {'ratio V4 / V3.2':<44}{c.flops_ratio:>16.1%}",
        "",
        (f"  matmul params per token (no embedding): V4 {_count(c.matmul_params)}, V3.2 "
        f"{_count(c.v32_matmul_params)}; MTP excluded from FLOPs"),
        "  release precision: V4 KV vectors = non-rope dims FP8 E4M3 + 1 UE8M0 byte per 64, rope dims BF16;",
        "    V4 indexer keys FP4 E2M1 + 1 UE8M0 byte per 32; V3.2 = FlashMLA FP8 sparse cache (656 B latent)",
        "    + FP8 indexer key with a float32 scale (132 B), per token per layer",
        "  bf16: every stored value 2 bytes; the compressor state is float32 at both precisions",
        "  window ring = min(N, window) vectors; entries and indexer keys = floor(N / ratio) per layer;",
        "  compressor state = float32 kv_state + score_state buffers at their allocated size.",
        "  GB = 1e9 bytes.",
    ]
    return "\n".join(lines)


def _count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)
