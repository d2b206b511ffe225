"""`trillion params FLAVOR_OR_PATH [--json]`: parameter counts, breakdown and bytes of a model.

A thin wrapper over `trillion.params.count_params`; the conventions are in docs/params.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..assets import SHIPPED, shipped_model
from ..config import ModelConfig
from ..errors import UnknownName
from ..flavors import FLAVORS, get_flavor
from ..params import COMPONENT_LABELS, COMPONENTS, ParamReport, count_params, format_bytes, format_count


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "params",
        help="count parameters (total, active, MTP), by component, and bytes",
        description="Count the parameters of a flavor or checkpoint config, built on the meta device "
        "(no memory): totals, per-token (active) counts, a per-component breakdown, and bytes at the "
        "release's dtypes and at bf16. Conventions: docs/params.md.",
    )
    p.add_argument("model", metavar="FLAVOR_OR_PATH",
                   help=f"a flavor ({', '.join(FLAVORS)}), a shipped model (demo), a checkpoint folder "
                   "holding config.json, or the config.json itself")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.set_defaults(func=run)


def resolve_config(spec: str) -> ModelConfig:
    """A flavor name, a folder with config.json, a config.json file, or a shipped model's name -> ModelConfig."""
    if spec in FLAVORS:
        return get_flavor(spec)
    path = shipped_model(spec) or Path(spec)
    if path.is_dir():
        path = path / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"{spec}: folder has no config.json")
        return ModelConfig.from_file(path)
    if path.is_file():
        return ModelConfig.from_file(path)
    raise UnknownName(
        f"{spec!r} is neither a flavor ({', '.join(FLAVORS)}), a shipped model ({', '.join(SHIPPED)}) "
        "nor a folder with config.json"
    )


def run(args: argparse.Namespace) -> int:
    report = count_params(resolve_config(args.model))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(render(report))
    return 0


def render(r: ParamReport) -> str:
    """The human-readable table."""
    k, e = r.n_activated_experts, r.n_routed_experts
    lines = [
        f"{r.name or 'model'}: parameters of Transformer(cfg) built on the meta device",
        "",
        f"  {'total (main model, no MTP)':<38}{format_count(r.total):>14}",
        f"  {'MTP blocks (own parameters)':<38}{format_count(r.mtp):>14}",
        f"  {'total + MTP':<38}{format_count(r.total_with_mtp):>14}",
        f"  {'active per token (main model)':<38}{format_count(r.active):>14}",
        f"  {'active per token, MTP blocks':<38}{format_count(r.active_mtp):>14}",
        f"  {'active blocks + MTP (no embed/head)':<38}{format_count(r.active_blocks_with_mtp):>14}",
        "",
        f"  active = all but routed experts, + {k} of {e} routed experts per layer (shared expert included),",
        f"  the whole head, and ONE embedding row ({r.embedding_row} parameters = dim) per token.",
        "",
        f"  {'component':<34}{'layers':>7}{'main':>14}{'MTP':>14}",
    ]
    # layers: how many main layers + MTP blocks have that attention kind.
    for c in COMPONENTS:
        main, mtp = r.breakdown[c], r.mtp_breakdown[c]
        if not (main or mtp):
            continue
        kind = c.removeprefix("attention_") if c.startswith("attention_") else None
        layers = f"{r.layer_kinds[kind]}+{r.mtp_layer_kinds[kind]}" if kind else ""
        lines.append(f"  {COMPONENT_LABELS[c]:<34}{layers:>7}{format_count(main):>14}{format_count(mtp):>14}")
    lines.append(f"  {'sum':<34}{'':>7}{format_count(r.total):>14}{format_count(r.mtp):>14}")
    lines.append("  (layers = main layers + MTP blocks of that attention kind)")
    lines += ["", f"  {'bytes (GB = 1e9)':<34}{'release dtypes':>16}{'bf16':>14}"]
    for label, release, bf16 in (
        ("main model", r.bytes_release, r.bytes_bf16),
        ("MTP blocks", r.mtp_bytes_release, r.mtp_bytes_bf16),
        ("main + MTP", r.bytes_release_with_mtp, r.bytes_bf16_with_mtp),
    ):
        lines.append(f"  {label:<34}{format_bytes(release):>16}{format_bytes(bf16):>14}")
    lines += [
        "  release dtypes, main model: "
        + ", ".join(f"{kind} {format_bytes(b)}" for kind, b in r.bytes_by_storage.items()),
        "  (fp4 = routed experts + 1 scale byte per 32 inputs; fp8 = + 1 scale byte per 128x128 block;",
        "   int64 = hash-routing tables, in the checkpoint but not parameters; bf16 column = 2 x params)",
    ]
    return "\n".join(lines)
