"""Sharded loading: each rank builds the model on `meta`, cuts it to its part, and reads only that.

`load_sharded(path, mesh)` is `trillion.load_model` for one rank of a mesh:
  1. config.json -> ModelConfig; a mesh that cannot hold it is refused here (layout.LayoutError),
     before even the files' headers are read;
  2. build the full model on `meta` (quantised modules too, when the checkpoint's config names a
     scheme or `quantize` asks for the release's storage) and match every stored tensor to it by
     name (checkpoint.plan / quant.checkpoint), so a bad checkpoint fails as load_model fails;
  3. `shard` the meta model to this rank's part (apply.py): it now has the local shapes;
  4. read, in file order, only this rank's part of each tensor (read.py: only those bytes, into
     fresh memory): its rows or columns of a tensor-parallel weight, its experts, every replicated
     tensor whole. A weight the
     release stores in FP8 / FP4 is read on the edges of its scale blocks that cover the part,
     dequantised, then trimmed; a quantised module that stays quantised takes its codes and scales
     as stored (its part must fall on whole scale blocks);
  5. `attach` the collectives.
So a rank's peak memory is its part plus the one tensor being read (docs/distributed.md measures it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh

from ..assets import shipped_model
from ..checkpoint.errors import CheckpointError, listing
from ..checkpoint.index import checkpoint_tensors, shard_files
from ..checkpoint.load import (
    PROGRESS_MIN_TENSORS,
    _check_table,
    _finish_quantization,
    fp8_block,
    load_model,
    read_config,
    without_absent_mtp,
)
from ..checkpoint.official import dequantize
from ..checkpoint.plan import Entry, make_plan
from ..checkpoint.quantized import kept_float, match_tensors, materialize, quantized_meta_model, stored_scheme
from ..config import ModelConfig
from ..device import CPU, default_device
from ..model import Transformer
from ..model.dtypes import cast_model, param_dtype
from ..quant.linear import QuantLinear
from ..quant.swap import quantized_modules
from .apply import attach, parallelize, placement_of, shard
from .layout import require_layout
from .read import read_part
from .shards import Cut, cut_of, cuts, format_blocks, global_name, release_blocks, stored_cuts, widen


def load_sharded(
    path_or_flavor: str | Path | ModelConfig,
    mesh: DeviceMesh,
    *,
    dtype: torch.dtype | str | None = None,
    quantize=None,
    fake_quant: bool | None = None,
    seed: int = 0,
    progress: bool | None = None,
) -> Transformer:
    """This rank's part of the model, parallelised on `mesh` (arguments as in load_model).

    A flavor name or ModelConfig builds the seeded random model whole on each rank, then cuts it
    (for small models: every rank gets the same weights as a single process would)."""
    from ..checkpoint.dtype import as_dtype

    dtype = as_dtype(dtype)
    folder = None
    if not isinstance(path_or_flavor, ModelConfig):
        folder = shipped_model(path_or_flavor) or Path(path_or_flavor)
    if folder is None or not folder.is_dir():
        model = load_model(path_or_flavor, dtype=dtype, seed=seed, fake_quant=fake_quant, quantize=quantize)
        return parallelize(model, mesh)

    cfg, raw = read_config(folder)
    require_layout(cfg, dp=mesh["dp"].size(), tp=mesh["tp"].size(), world=mesh.size())
    tensors = checkpoint_tensors(folder)
    cfg = without_absent_mtp(cfg, list(tensors), folder)
    cfg = cfg if fake_quant is None else cfg.replace(fake_quant=fake_quant)

    scheme = stored_scheme(raw, quantize) if "quantization_config" in raw else None
    block = fp8_block(raw)
    if scheme is not None:
        try:
            model = quantized_meta_model(cfg, scheme, dtype, kept_float(raw))
        except ValueError as e:
            raise CheckpointError(f"{folder}: {e}") from None
        plan = match_tensors(tensors, model)
    else:
        with torch.device("meta"):
            model = cast_model(Transformer(cfg), dtype)
        plan = make_plan(tensors, model.state_dict(), block)
    if not plan.ok:
        raise plan.error(folder, shard_files(folder))

    full = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    full.update({n: (m.out_features, m.in_features) for n, m in quantized_modules(model).items()})
    placement, tp_group, ep_group = placement_of(mesh)
    try:
        shard(model, placement)
    except ValueError as e:  # a quantised weight whose part splits its scale blocks
        raise CheckpointError(
            f"{folder}: {e}; load it dequantised (quantize=False, for the release's checkpoint) or choose a tp "
            "whose parts fall on whole blocks"
        ) from None
    device = CPU if mesh.device_type == CPU.type else default_device()  # init_mesh made it current
    _read_parts(model, {e.ours: e for e in plan.entries}, cuts(cfg, placement), full, dtype, device, block,
                folder, progress)
    model = _finish_quantization(model.eval(), quantize)  # as load_model: quantise, dequantise or keep
    return attach(model, placement, tp_group, ep_group)


def _read_parts(model, entries: dict[str, Entry], table: dict[str, Cut], full: dict, dtype, device, block,
                folder: Path, progress) -> None:
    """Fill every tensor of the sharded meta `model` with its part of the checkpoint's tensor."""
    from tqdm.auto import tqdm

    first = model.placement.experts(model.cfg).start
    quant = quantized_modules(model)
    owner = {f"{n}.{leaf}": (n, m) for n, m in quant.items() for leaf in m.stored_spec()}
    names = sorted(((local, global_name(local, first)) for local in model.state_dict()),
                   key=lambda pair: (str(entries[pair[1]].stored.file), entries[pair[1]].stored.offset))
    show = sys.stderr.isatty() and len(names) >= PROGRESS_MIN_TENSORS if progress is None else progress
    pending: dict[str, dict[str, torch.Tensor]] = {}
    with tqdm(total=len(names), desc=f"loading {folder.name} (part)", unit="tensor", disable=not show) as bar:
        for local, ours in names:  # in file order
            e, cut = entries[ours], cut_of(table, ours)
            if local in owner:  # codes or scales of a module that stays quantised
                mname, m = owner[local]
                leaf = local.rpartition(".")[2]
                got = pending.setdefault(mname, {})
                got[leaf] = _read_stored(e, cut, m, full[ours.rpartition(".")[0]], leaf).to(device)
                if len(got) == len(m.stored_spec()):
                    materialize(m, device)
                    m.load_stored(pending.pop(mname))
            else:
                target = _tensor(model, local)
                want = param_dtype(ours, dtype) if target.is_floating_point() else target.dtype
                t = _read_float(e, cut, full[ours], want, block).to(device, want)
                if ours.endswith("tid2eid"):
                    _check_table(t, e.stored, model.cfg.n_routed_experts)
                _put(model, local, t.contiguous())
            bar.update()
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:  # every tensor of the sharded model was read, so this is a bug, not a bad checkpoint
        raise CheckpointError(f"{folder}: tensors left unloaded on meta: {listing(left)}")


def _read_float(e: Entry, cut: Cut | None, shape: tuple, want: torch.dtype, block) -> torch.Tensor:
    """This rank's part of a float tensor; a release FP8 / FP4 weight is dequantised on the way: the
    codes and scales of the whole blocks covering the part are read, dequantised, then trimmed."""
    if e.scale is None:
        return read_part(e.stored, cut)
    # The result is allocated before the temporaries: freed after it, they stay reusable instead of
    # fragmenting the heap under the tensors that are kept (which cost 1.4x the part in RSS).
    wide = widen(release_blocks(e.stored.dtype, block), shape, cut) if cut is not None else None
    part = list(shape)
    if cut is not None:
        part[cut.dim] = cut.stop - cut.start
    out = torch.empty(part, dtype=want)
    if wide is None:
        return out.copy_(dequantize(read_part(e.stored), read_part(e.scale), want, block))
    pieces = stored_cuts(release_blocks(e.stored.dtype, block), shape, wide)
    w = dequantize(read_part(e.stored, pieces["weight"]), read_part(e.scale, pieces["scale"]), want, block)
    return out.copy_(Cut(cut.dim, cut.start - wide.start, cut.stop - wide.start).take(w))


def _read_stored(e: Entry, cut: Cut | None, m: QuantLinear, shape: tuple, leaf: str) -> torch.Tensor:
    """This rank's part of a quantised module's stored codes or scales (`shard` has checked that
    the cut falls on whole scale blocks)."""
    if cut is None:
        return read_part(e.stored)
    part = stored_cuts(format_blocks(m.fmt, getattr(m, "group_size", None)), shape, cut)[leaf]
    return read_part(e.stored, part)


def _tensor(model: nn.Module, name: str) -> torch.Tensor:
    module, _, leaf = name.rpartition(".")
    m = model.get_submodule(module)
    return m._parameters[leaf] if leaf in m._parameters else m._buffers[leaf]


def _put(model: nn.Module, name: str, t: torch.Tensor) -> None:
    module_name, _, leaf = name.rpartition(".")
    m = model.get_submodule(module_name)
    if leaf in m._parameters:
        m._parameters[leaf] = nn.Parameter(t, requires_grad=m._parameters[leaf].requires_grad)
    else:
        m._buffers[leaf] = t
