"""Which (dp, tp, world) meshes a model can be split over: one pure function, no processes.

The layout (docs/plan.md, and issue 13's distributed engine):

* attention is data parallel over `dp` groups and tensor parallel over the `tp` ranks of a group:
  each group owns its own sequences; within a group the query heads (and their sinks) and V4's
  output groups (`wo_a` is split by group, `wo_b` by rows) are divided among the ranks, while the one
  KV vector per token, the compressor and the indexer stay whole;
* routed experts are expert parallel over every rank (ep = world = dp x tp): each rank holds
  (n_routed_experts + redundant_experts) / world expert slots per MoE layer;
* the embedding and the output head are vocab parallel over tp (padded when vocab does not divide).

`check_layout` lists every reason a mesh cannot hold a model, so a launcher can refuse it before
loading anything and the planner can explain why a layout was skipped. Redundant experts (extra
replicas of hot experts, as DeepSeek's and Huawei's services deploy) are for the planner; the
engine runs with none.
"""

from __future__ import annotations

from typing import Protocol


class LayoutConfig(Protocol):
    """What the check reads: a `ModelConfig`, or any config with these fields. `o_groups` is
    optional (V4's grouped output projection; V3's MLA has none)."""

    n_heads: int
    n_routed_experts: int


class LayoutError(ValueError):
    """A mesh that cannot hold the model; the message lists every problem."""


def check_layout(cfg: LayoutConfig, *, dp: int, tp: int, world: int, redundant_experts: int = 0) -> list[str]:
    """Every reason (dp, tp) over `world` ranks cannot hold `cfg`; [] when the layout is valid."""
    problems: list[str] = []
    for name, value in (("dp", dp), ("tp", tp), ("world", world)):
        if value < 1:
            problems.append(f"{name} = {value}; it must be at least 1")
    if redundant_experts < 0:
        problems.append(f"redundant_experts = {redundant_experts}; it must be >= 0")
    if problems:
        return problems
    if dp * tp != world:
        problems.append(f"world size {world} != dp x tp = {dp} x {tp} = {dp * tp}")
    if cfg.n_heads % tp:
        problems.append(f"tp = {tp} does not divide the {cfg.n_heads} attention heads")
    o_groups = getattr(cfg, "o_groups", None)
    if o_groups is not None and o_groups % tp:
        problems.append(f"tp = {tp} does not divide the {o_groups} output groups (wo_a is split by group)")
    slots = cfg.n_routed_experts + redundant_experts
    if slots % world:
        what = f"{cfg.n_routed_experts} routed experts" + (
            f" + {redundant_experts} redundant" if redundant_experts else ""
        )
        problems.append(f"world size {world} does not divide the {what} (experts are split evenly over every rank)")
    return problems


def require_layout(cfg: LayoutConfig, *, dp: int, tp: int, world: int, redundant_experts: int = 0) -> None:
    """Raise LayoutError naming every problem of the mesh (nothing when it is valid)."""
    problems = check_layout(cfg, dp=dp, tp=tp, world=world, redundant_experts=redundant_experts)
    if problems:
        raise LayoutError(f"cannot split the model over dp={dp} x tp={tp} (world {world}): " + "; ".join(problems))


__all__ = ["LayoutConfig", "LayoutError", "check_layout", "require_layout"]
