"""Which part of the full model each rank holds: one table, used both to cut a built model
(parallelize) and to read only those parts from a checkpoint (load.py).

A rank at tensor-parallel position tp_rank of tp and expert-parallel position ep_rank of ep holds
(K head_dim, r o_lora_rank, [h0, h1) its heads, [g0, g1) its output groups, [v0, v1) its vocabulary):
  {blk}.attn.wq_b.weight    rows [h0 K, h1 K)     its query heads
  {blk}.attn.attn_sink      [h0, h1)
  {blk}.attn.wo_a.weight    rows [g0 r, g1 r)     its output groups
  {blk}.attn.wo_b.weight    columns [g0 r, g1 r)  (partial sums: one all-reduce)
  embed.weight, head.weight rows [v0, v1)
  {blk}.ffn.experts.j.*     global expert ep_rank * E / ep + j, for j < E / ep (whole experts)
  everything else           whole, on every rank
where {blk} is layers.i or mtp.i. A quantised weight is cut through its stored codes and scales,
which works when the cut falls on the edges of its scale blocks (`stored_cuts`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from ..config import ModelConfig, ceil_div


def split_range(n: int, parts: int, index: int) -> tuple[int, int]:
    """[start, stop) of part `index` when n items split into `parts` near-equal contiguous ranges
    (the first n % parts ranges one longer, like torch.tensor_split)."""
    base, extra = divmod(n, parts)
    start = index * base + min(index, extra)
    return start, start + base + (index < extra)


@dataclass(frozen=True)
class Cut:
    """The part [start, stop) along `dim` of a tensor."""

    dim: int
    start: int
    stop: int

    def take(self, src) -> torch.Tensor:
        """This part of a tensor, or of a safetensors slice (which then reads only these bytes)."""
        if isinstance(src, torch.Tensor):
            return src.narrow(self.dim, self.start, self.stop - self.start)
        return src[(slice(None),) * self.dim + (slice(self.start, self.stop),)]


@dataclass(frozen=True)
class Placement:
    """Where a rank sits: tp_rank of tp (attention, vocabulary) and ep_rank of ep (experts)."""

    tp_rank: int = 0
    tp: int = 1
    ep_rank: int = 0
    ep: int = 1

    def experts(self, cfg: ModelConfig) -> range:
        n = cfg.n_routed_experts // self.ep
        return range(self.ep_rank * n, (self.ep_rank + 1) * n)

    def vocab(self, cfg: ModelConfig) -> tuple[int, int]:
        return split_range(cfg.vocab_size, self.tp, self.tp_rank)

    def vocab_sizes(self, cfg: ModelConfig) -> list[int]:
        return [b - a for a, b in (split_range(cfg.vocab_size, self.tp, i) for i in range(self.tp))]


def blocks(cfg: ModelConfig) -> list[str]:
    return [f"layers.{i}" for i in range(cfg.n_layers)] + [f"mtp.{i}" for i in range(cfg.n_mtp_layers)]


def cuts(cfg: ModelConfig, p: Placement) -> dict[str, Cut]:
    """{owner: Cut} of everything tensor parallelism cuts; the owner is a module whose weight is
    cut (wq_b, wo_a, wo_b, embed, head) or a parameter (attn_sink)."""
    if p.tp == 1:
        return {}
    hn, gn = cfg.n_heads // p.tp, cfg.o_groups // p.tp
    h0, g0, k, r = p.tp_rank * hn, p.tp_rank * gn, cfg.head_dim, cfg.o_lora_rank
    v0, v1 = p.vocab(cfg)
    out = {"embed": Cut(0, v0, v1), "head": Cut(0, v0, v1)}
    for b in blocks(cfg):
        out[f"{b}.attn.wq_b"] = Cut(0, h0 * k, (h0 + hn) * k)
        out[f"{b}.attn.attn_sink"] = Cut(0, h0, h0 + hn)
        out[f"{b}.attn.wo_a"] = Cut(0, g0 * r, (g0 + gn) * r)
        out[f"{b}.attn.wo_b"] = Cut(1, g0 * r, (g0 + gn) * r)
    return out


_EXPERT = re.compile(r"^((?:layers|mtp)\.\d+\.ffn\.experts\.)(\d+)(\..+)$")


def global_name(name: str, first_expert: int) -> str:
    """A rank's state_dict name -> the full model's (local expert j is global first_expert + j)."""
    m = _EXPERT.match(name)
    return f"{m[1]}{first_expert + int(m[2])}{m[3]}" if m else name


def cut_of(table: dict[str, Cut], name: str) -> Cut | None:
    """The cut of a full-model tensor `name` (a parameter, or a module's `weight` / `scale`)."""
    if name in table:
        return table[name]
    return table.get(name.rpartition(".")[0])


# --------------------------------------------------------------------------- stored quantised tensors


@dataclass(frozen=True)
class Blocks:
    """How a quantised weight [N, K] is stored: `weight` holds `pack` codes a byte along K;
    `scale` has one value per rows x cols block (cols None: one per row, a 1-D scale)."""

    rows: int
    cols: int | None
    pack: int = 1


def format_blocks(fmt: str, group_size: int | None = None) -> Blocks:
    """The storage of trillion.quant's formats (quant/linear.py's module docstring)."""
    table = {
        "fp8": Blocks(128, 128),
        "hif8": Blocks(128, 128),
        "mxfp8": Blocks(1, 32),
        "mxfp4": Blocks(1, 32, 2),
        "int8": Blocks(1, None),
        "int4": Blocks(1, group_size or 128, 2),
    }
    return table[fmt]


def release_blocks(dtype: torch.dtype, fp8_block: tuple[int, int]) -> Blocks:
    """The official release's storage of a weight held as `dtype`: FP8 blocks or packed FP4."""
    return Blocks(*fp8_block) if dtype == torch.float8_e4m3fn else Blocks(1, 32, 2)


def widen(b: Blocks, shape: tuple[int, int], cut: Cut) -> Cut:
    """The smallest cut holding `cut` whose edges are whole scale blocks (and whole code bytes)."""
    size = b.rows if cut.dim == 0 else (b.cols if b.cols is not None else b.pack)
    start = cut.start - cut.start % size
    stop = min(shape[cut.dim], ceil_div(cut.stop, size) * size)
    return Cut(cut.dim, start, stop)


def stored_cuts(b: Blocks, shape: tuple[int, int], cut: Cut) -> dict[str, Cut | None]:
    """{'weight': cut of the codes, 'scale': cut of the scales (None: whole)} for a cut of the
    float weight [N, K] = shape; raises ValueError when the cut splits a scale block."""
    if widen(b, shape, cut) != cut:
        along = "rows" if cut.dim == 0 else "columns"
        size = b.rows if cut.dim == 0 else (b.cols if b.cols is not None else b.pack)
        raise ValueError(
            f"{along} [{cut.start}, {cut.stop}) of a [{shape[0]}, {shape[1]}] weight do not fall on its "
            f"{size}-wide scale blocks"
        )
    if cut.dim == 0:
        rows = Cut(0, cut.start // b.rows, math.ceil(cut.stop / b.rows))
        return {"weight": cut, "scale": rows}
    codes = Cut(1, cut.start // b.pack, cut.stop // b.pack)
    scale = None if b.cols is None else Cut(1, cut.start // b.cols, math.ceil(cut.stop / b.cols))
    return {"weight": codes, "scale": scale}
