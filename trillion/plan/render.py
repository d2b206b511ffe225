"""Text and markdown views of a plan (`trillion plan`, docs/plan.md). The formula tags [M1] ... [T1]
are the sections of docs/plan.md."""

from __future__ import annotations

from ..kvcost import format_tokens
from .hardware import HARDWARE, Hardware
from .planner import Plan, Roofline
from .published import Comparison

GB = 1e9


def _gb(n: float) -> str:
    return f"{n / GB:,.2f}"


def _rate(n: float) -> str:
    return f"{n:,.0f}" if n >= 100 else f"{n:,.1f}"


def _time(s: float) -> str:
    for unit, scale in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if s >= scale:
            return f"{s / scale:,.{1 if unit == 's' else 2}f} {unit}"
    return f"{s * 1e9:,.2f} ns"


def layout_line(p: Plan) -> str:
    lay = p.layout
    inst = f"{lay.instances} instances" if lay.instances > 1 else "1 instance"
    red = f" + {lay.redundant_experts} redundant" if lay.redundant_experts else ""
    return (f"{inst} of {lay.world} devices: attention dp={lay.dp} x tp={lay.tp}, experts ep={lay.world} "
            f"({lay.expert_slots} slots per device per layer: {lay.expert_slots * lay.world - lay.redundant_experts}"
            f" routed experts{red})")


def _bounds(r: Roofline, unit: str, formulas: dict[str, str]) -> list[str]:
    rows = [f"  {'bound':<16}{unit:>12}   formula"]
    for name in ("memory", "compute", "communication"):
        rows.append(f"  {name:<16}{_time(getattr(r, name)):>12}   {formulas[name]}")
    rows.append(f"  {'=> ' + r.binding + '-bound':<28}   the largest of the three binds")
    return rows


def render(p: Plan, hw: Hardware) -> str:
    """The human-readable plan."""
    m, f = p.memory, p.formats
    q = f"{p.tokens_per_step:.2f} tokens per step (MTP)" if p.tokens_per_step > 1 else "one token per step"
    lines = [
        (f"{p.model} on {p.devices} x {hw.label}, precision {p.precision}, context {p.context:,} tokens "
        f"({format_tokens(p.context)})"),
        "",
        f"layout: {layout_line(p)}",
        "        accepted by trillion.parallel.layout.check_layout",
        "",
        f"  {'memory per device':<60}{'GB':>10}   formula",
        f"  {'routed experts':<60}{_gb(m.experts):>10}   [M1] slots x expert bytes / E",
        f"  {'split by tp (query heads, output groups, embedding, head)':<60}{_gb(m.tp_split):>10}   [M1] / tp",
        f"  {'replicated (KV projection, shared expert, router, ...)':<60}{_gb(m.replicated):>10}   [M1]",
        f"  {'weights':<60}{_gb(m.weights):>10}",
        (f"  {f'attention state: {m.batch_per_group} x {_gb(m.state_per_sequence)} GB':<60}{_gb(m.state):>10}"
        "   [M2] b x S(N)"),
        f"  {'activations and workspace':<60}{_gb(m.workspace):>10}   [M3] max(b q A, chunk (A + 4 C))",
        (f"  {'total':<60}{_gb(m.total):>10}   [M4] <= usable {_gb(m.usable)} GB "
        f"({m.usable / m.capacity:.0%} of {_gb(m.capacity)})"),
        "",
        f"largest batch at this context [B1]: {m.max_batch_per_group} sequences per dp group, "
        f"{m.max_batch_per_group * p.layout.dp * p.layout.instances:,} over {p.devices} devices"
        + (f" (planned batch: {p.batch:,})" if p.batch != m.max_batch_per_group * p.layout.dp * p.layout.instances
           else ""),
        "",
        f"decode: {p.batch:,} sequences, {q}, per step",
        *_bounds(p.decode, "per step", {
            "memory": "[D1] (weights read + state read) / HBM bandwidth",
            "compute": f"[D2] dense/{f['dense']} + experts/{f['experts']} + attention/{f['attention']} + "
                       f"indexer/{f['indexer']}",
            "communication": "[D3] expert dispatch + combine (+ tp all-reduce) / link bandwidth",
        }),
        (f"  tokens/s per device {_rate(p.decode_tokens_per_s_device):>12}   [D4] batch x tokens per step / step / "
        "devices"),
        f"  tokens/s per sequence {_rate(p.decode_tokens_per_s_sequence):>10}   [D4] tokens per step / step",
        f"  tokens/s, all devices {_rate(p.decode_tokens_per_s):>10}",
        "",
        f"prefill: prompts of {format_tokens(p.context)} tokens, every device busy, per prompt token",
        *_bounds(p.prefill, "per token", {
            "memory": "[P1] weights once per chunk + state written / HBM bandwidth",
            "compute": "[P1] (dense + mean attention) / dp + this device's expert share",
            "communication": "[P1] expert dispatch + combine / link bandwidth",
        }),
        (f"  tokens/s per device {_rate(p.prefill_tokens_per_s_device):>12}   [P1] 1 / (per-token time x devices "
        "per instance)"),
        "",
        (f"time to first token, one {format_tokens(p.context)}-token prompt on an idle instance: "
        f">= {_time(p.ttft.time)} ({p.ttft.binding}-bound) [T1]"),
    ]
    if p.notes:
        lines += ["", "notes:", *(f"  - {n}" for n in p.notes)]
    lines += ["", "rates are rooflines (upper bounds, perfect overlap); GB = 1e9 bytes; formulas: docs/plan.md"]
    return "\n".join(lines)


def deployment_table(plans: list[Plan]) -> str:
    """One markdown row per plan (docs/plan.md)."""
    rows = [
        ("| model | hardware | devices | layout (per instance) | weights / device | state / sequence "
        "| batch | decode tok/s / device | tok/s / sequence | decode bound | prefill tok/s / device | TTFT (one prompt) |"),
        "|" + "---|" * 12,
    ]
    for p in plans:
        lay = p.layout
        cells = [
            f"`{p.model}`", HARDWARE[p.hardware].label if p.hardware in HARDWARE else p.hardware, f"{p.devices:,}",
            f"{lay.instances} x (dp {lay.dp} x tp {lay.tp}, ep {lay.world})",
            f"{_gb(p.memory.weights)} GB", f"{_gb(p.memory.state_per_sequence)} GB", f"{p.batch:,}",
            _rate(p.decode_tokens_per_s_device), _rate(p.decode_tokens_per_s_sequence), p.decode.binding,
            _rate(p.prefill_tokens_per_s_device), f"{_time(p.ttft.time)} ({p.ttft.binding})",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def comparison_table(comparisons: list[Comparison]) -> str:
    """Published figures against the planned bounds (docs/plan.md)."""
    rows = [
        ("| system | phase | hardware, layout | published tok/s / device | computed | planned bound (batch) "
        "| bound binds | achieved / bound | bound at the published batch | achieved / bound |"),
        "|" + "---|" * 10,
    ]
    for c in comparisons:
        pub, b = c.published, c.bound
        at = c.at_batch
        cells = [
            pub.system, pub.phase,
            (f"{pub.devices} x {HARDWARE[pub.hardware].label}, dp {pub.dp} x tp {pub.tp}, ep {pub.devices}, "
            f"{pub.precision}, {format_tokens(pub.context)}"),
            f"{pub.figure:,.0f}", f"{pub.computed:,.0f}",
            f"{c.rate(b):,.0f} ({b.batch // pub.devices}/device)" if pub.phase == "decode" else f"{c.rate(b):,.0f}",
            (b.decode if pub.phase == "decode" else b.prefill).binding, f"{c.ratio:.2f}",
            f"{c.rate(at):,.0f} ({pub.batch_per_device}/device)" if at else "-",
            f"{c.ratio_at_batch:.2f}" if at else "-",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)



# The deployments docs/plan.md tabulates: (flavor, hardware, devices, pinned tp or None).
DOC_DEPLOYMENTS = (
    ("v4-pro", "950dt", 8192, None),
    ("v4-pro", "950dt", 8192, 8),
    ("v4-flash", "950dt", 8192, None),
    ("v4-pro", "h200", 16, None),
    ("v4-pro", "h200", 64, None),
    ("v4-flash", "h200", 8, None),
    ("v4-flash", "h200", 64, None),
    ("v4-1t", "950pr", 64, None),
    ("v4-1t", "950pr", 8192, None),
)


def doc_tables() -> str:
    """The tables of docs/plan.md: V4 deployments at 1M (release precision) and the published figures.
    `python -c "from trillion.plan.render import doc_tables; print(doc_tables())"` prints them."""
    from ..flavors import get_flavor
    from .costs import v4_costs
    from .hardware import get_hardware
    from .planner import Request, plan
    from .published import PUBLISHED, compare

    plans = [plan(Request(v4_costs(get_flavor(f)), get_hardware(hw), n, tp=tp)) for f, hw, n, tp in DOC_DEPLOYMENTS]
    return deployment_table(plans) + "\n\n" + comparison_table([compare(p) for p in PUBLISHED])


__all__ = ["DOC_DEPLOYMENTS", "comparison_table", "deployment_table", "doc_tables", "layout_line", "render"]
