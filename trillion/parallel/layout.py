"""Which meshes a model can run on: the checks made before anything is loaded, and how work splits.

`check_layout(cfg, dp=, tp=, world=)` returns one sentence per reason a (dp, tp) mesh over `world`
processes cannot hold the model (empty when it can). Plain arithmetic on the config, no torch:
`trillion plan` and the distributed loader ask the same question.

The split it checks (docs/distributed.md):
  tp (tensor parallel, attention): each tp rank holds n_heads / tp query heads with their sinks and
      o_groups / tp output groups; the vocabulary splits into tp near-equal ranges;
  ep = world (expert parallel): each rank holds n_routed_experts / world whole routed experts;
  dp (data parallel): each group of tp ranks runs its own sequences.
The indexer is replicated on every tp rank, so its heads set no condition.
"""

from __future__ import annotations

from ..config import ModelConfig


def check_layout(cfg: ModelConfig, *, dp: int, tp: int, world: int) -> list[str]:
    """Every reason the mesh (dp x tp over `world` processes) cannot hold `cfg`; [] when it can."""
    if dp < 1 or tp < 1:
        return [f"dp = {dp} and tp = {tp} must both be at least 1"]
    problems = []
    if dp * tp != world:
        problems.append(f"dp x tp = {dp} x {tp} = {dp * tp}, but {world} processes were started; launch dp x tp")
    if cfg.n_heads % tp:
        problems.append(
            f"tp = {tp} does not divide n_heads = {cfg.n_heads}: each tensor-parallel rank holds n_heads / tp "
            "query heads"
        )
    if cfg.o_groups % tp:
        problems.append(
            f"tp = {tp} does not divide o_groups = {cfg.o_groups}: each tensor-parallel rank holds o_groups / tp "
            "output groups of wo_a"
        )
    if cfg.n_routed_experts % world:
        problems.append(
            f"{world} processes do not divide n_routed_experts = {cfg.n_routed_experts}: experts are spread "
            "evenly over every process (expert parallel over dp x tp)"
        )
    return problems


def split_range(n: int, parts: int, index: int) -> tuple[int, int]:
    """[start, stop) of part `index` when n items split into `parts` near-equal contiguous ranges
    (the first n % parts ranges one longer, like torch.tensor_split)."""
    base, extra = divmod(n, parts)
    start = index * base + min(index, extra)
    return start, start + base + (index < extra)


class LayoutError(ValueError):
    """A mesh that cannot hold the model; the message gives every reason."""


def require_layout(cfg: ModelConfig, *, dp: int, tp: int, world: int) -> None:
    """Raise LayoutError naming every problem `check_layout` finds."""
    problems = check_layout(cfg, dp=dp, tp=tp, world=world)
    if problems:
        name = f" {cfg.name!r}" if cfg.name else ""
        raise LayoutError(f"cannot run model{name} on a dp={dp} x tp={tp} mesh: " + "; ".join(problems))
