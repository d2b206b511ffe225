"""`load_model`: a checkpoint folder (or a shipped model's name, `demo`) -> the model it holds; a flavor
name -> a seeded random model.

Steps for a folder:
  1. config.json -> ModelConfig; the file headers -> every stored tensor's name, dtype and shape.
  2. Build the Transformer on `meta` (no memory) and match names through the layout table
     (layout detected from the names); every mismatch is raised at once, before any data is read.
  3. Shard by shard, read each tensor through safetensors `safe_open`, dequantise FP8/FP4 with its
     block scale, cast to `param_dtype(name, dtype)` and assign it in place of the meta tensor.
     A shard stored exactly as the model wants it stays memory-mapped (copy-on-write, paged in on
     use); a shard that needs casting is read tensor by tensor into fresh memory. Either way peak
     memory stays near the model's size in its compute dtype. (A memory-mapped model must not
     outlive an in-place overwrite of its files; `save_model` never overwrites in place.)
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from ..assets import DEFAULT_MODEL, SHIPPED, shipped_model
from ..config import ConfigError, ModelConfig
from ..flavors import FLAVORS
from ..model import Transformer
from ..model.dtypes import cast_model, param_dtype
from ..model.init import init_weights
from ..quant.swap import quantized_modules
from .dtype import as_dtype
from .errors import CheckpointError, listing
from .header import TensorInfo
from .index import checkpoint_tensors, shard_files
from .layouts import detect_layout, from_checkpoint_name
from .official import FP8_BLOCK, dequantize
from .plan import Entry, Plan, make_plan
from .quantized import finish, kept_float, match_tensors, materialize, quantized_meta_model, stored_scheme

PROGRESS_MIN_TENSORS = 1000


def load_model(
    path_or_flavor: str | Path | ModelConfig = DEFAULT_MODEL,
    *,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
    fake_quant: bool | None = None,
    progress: bool | None = None,
    quantize=None,
) -> Transformer:
    """A Transformer in eval mode, from a checkpoint folder, a shipped model's name, a flavor name or a
    ModelConfig. With no argument: the demo model shipped in the package (`trillion.assets`).

    dtype: compute dtype (default float32); norms, mHC, sinks, compressor, router and head stay
    float32 (`trillion.model.dtypes`). device: where the weights go; "meta" builds the model
    without memory (a folder's names and shapes are still checked). seed: random init of a flavor.
    fake_quant: overrides the config's `fake_quant`. progress: a bar over tensors (None: only on a
    terminal and for large checkpoints). An existing folder wins over a shipped model or a flavor of
    the same name.
    quantize: None keeps what the checkpoint's config says (a scheme in its quantization_config
    loads quantised modules whose weights stay quantised in memory; docs/quantization.md); a scheme
    name or `trillion.quant.Scheme` gives the model in that scheme (a release checkpoint's FP8 / FP4
    tensors are read as stored for "v4-release"); False or "none" gives a float model.
    """
    dtype = as_dtype(dtype)
    if isinstance(path_or_flavor, ModelConfig):
        model = _random_model(_with_fake_quant(path_or_flavor, fake_quant), dtype, device, seed)
        return _finish_quantization(model, quantize)
    path = shipped_model(path_or_flavor) or Path(path_or_flavor)
    if path.is_dir():
        return load_folder(
            path, dtype=dtype, device=device, fake_quant=fake_quant, progress=progress, quantize=quantize
        )
    if path.is_file():
        raise CheckpointError(f"{path}: is a file; pass the checkpoint folder (config.json + *.safetensors)")
    if str(path_or_flavor) in FLAVORS:
        model = _random_model(_with_fake_quant(FLAVORS[str(path_or_flavor)], fake_quant), dtype, device, seed)
        return _finish_quantization(model, quantize)
    raise CheckpointError(
        f"{path_or_flavor}: neither a checkpoint folder nor a flavor (flavors: {', '.join(FLAVORS)}; "
        f"shipped models: {', '.join(SHIPPED)})"
    )


def _finish_quantization(model: Transformer, quantize) -> Transformer:
    """Apply `quantize` (see load_model) to a model as loaded."""
    return model if quantize is None else finish(model, quantize)


def _with_fake_quant(cfg: ModelConfig, fake_quant: bool | None) -> ModelConfig:
    return cfg if fake_quant is None else cfg.replace(fake_quant=fake_quant)


def _random_model(cfg: ModelConfig, dtype: torch.dtype, device, seed: int) -> Transformer:
    device = torch.device(device or "cpu")
    with torch.device(device):
        model = Transformer(cfg)
    if device.type != "meta":
        init_weights(model, seed=seed)
    return cast_model(model, dtype).eval()


def read_config(folder: Path) -> tuple[ModelConfig, dict]:
    """(ModelConfig, the raw config.json dict) of a checkpoint folder."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise CheckpointError(
            f"{folder}: no config.json; a checkpoint folder needs the model's config next to its weights"
        )
    try:
        raw = json.loads(path.read_text())
        return ModelConfig.from_file(path), raw
    except (ConfigError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: {e}") from None


def fp8_block(raw: dict) -> tuple[int, int]:
    """FP8 weight block of a checkpoint (quantization_config.weight_block_size, else 128 x 128)."""
    block = (raw.get("quantization_config") or {}).get("weight_block_size") or FP8_BLOCK
    return int(block[0]), int(block[1])


def without_absent_mtp(cfg: ModelConfig, names, where: Path) -> ModelConfig:
    """transformers drops the MTP block on save; a checkpoint with no `mtp.*` at all loads without it."""
    if cfg.n_mtp_layers == 0:
        return cfg
    layout = detect_layout(set(names))
    if any((from_checkpoint_name(n, layout) or "").startswith("mtp.") for n in names):
        return cfg
    warnings.warn(
        f"{where}: config.json declares {cfg.n_mtp_layers} MTP block(s) but no mtp.* tensor is stored "
        f"(transformers does not save them); loading the model without its MTP block",
        stacklevel=4,
    )
    return cfg.replace(n_mtp_layers=0, compress_ratios=cfg.compress_ratios[: cfg.n_layers])


def load_folder(
    folder: Path,
    *,
    dtype: torch.dtype = torch.float32,
    device=None,
    fake_quant: bool | None = None,
    progress: bool | None = None,
    quantize=None,
) -> Transformer:
    """The model stored in `folder` (see the module docstring for the steps; `quantize` as in load_model)."""
    folder = Path(folder)
    cfg, raw = read_config(folder)
    tensors = checkpoint_tensors(folder)
    cfg = _with_fake_quant(without_absent_mtp(cfg, list(tensors), folder), fake_quant)
    block = fp8_block(raw)
    scheme = stored_scheme(raw, quantize) if "quantization_config" in raw else None
    if scheme is not None:
        # a quantised checkpoint whose config names its scheme loads with its weights kept quantised
        try:
            model = quantized_meta_model(cfg, scheme, dtype, kept_float(raw))
        except ValueError as e:  # the scheme does not fit the config's shapes
            raise CheckpointError(f"{folder}: {e}") from None
        plan = match_tensors(tensors, model)
    else:
        with torch.device("meta"):
            model = cast_model(Transformer(cfg), dtype)
        plan = make_plan(tensors, model.state_dict(), block)
    if not plan.ok:
        raise plan.error(folder, shard_files(folder))
    device = torch.device(device or "cpu")
    if device.type != "meta":
        fill(model, plan, dtype, device, block, progress, folder)
        left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if left:  # the plan covers every state_dict entry, so this is a bug, not a bad checkpoint
            raise CheckpointError(f"{folder}: tensors left unloaded on meta: {listing(left)}")
    return _finish_quantization(model.eval(), quantize)


def fill(model: nn.Module, plan: Plan, dtype, device, block, progress, folder: Path) -> None:
    """Read every tensor of `plan` into the meta `model`, shard by shard: float tensors (FP8 / FP4
    ones dequantised with their scale) cast to `param_dtype` and assigned; a quantised module's
    codes and scales gathered and loaded as stored once all are read."""
    from tqdm.auto import tqdm

    owners = {f"{n}.{leaf}": (n, m) for n, m in quantized_modules(model).items() for leaf in m.stored_spec()}
    by_file: dict[Path, list[tuple[Entry, torch.dtype | None]]] = {}
    for e in plan.entries:
        want = None  # stored as is (a quantised module's codes or scales)
        if e.ours not in owners:
            target = model.get_parameter(e.ours) if _is_param(model, e.ours) else model.get_buffer(e.ours)
            want = param_dtype(e.ours, dtype) if target.is_floating_point() else target.dtype
        by_file.setdefault(e.stored.file, []).append((e, want))
    if progress is None:
        progress = sys.stderr.isatty() and len(plan.entries) >= PROGRESS_MIN_TENSORS
    pending: dict[str, dict[str, torch.Tensor]] = {}
    bar = tqdm(total=len(plan.entries), desc=f"loading {folder.name}", unit="tensor", disable=not progress)
    with bar:
        for file, entries in by_file.items():
            # A shard whose tensors all load as stored is memory-mapped and kept so (copy-on-write,
            # paged in on use): the model costs no more than its own size. A shard with anything to
            # cast or dequantise is read with pread instead, so its source bytes never stay resident.
            as_stored = device.type == "cpu" and not owners and all(
                e.scale is None and e.stored.dtype == w for e, w in entries
            )
            with open_safetensors(file, backend="mmap" if as_stored else "pread") as f:
                for e, want in entries:
                    t = read_tensor(f, e.stored)
                    if want is None:
                        mname, m = owners[e.ours]
                        got = pending.setdefault(mname, {})
                        got[e.ours.rsplit(".", 1)[1]] = t.to(device)
                        if len(got) == len(m.stored_spec()):
                            materialize(m, device)
                            m.load_stored(pending.pop(mname))
                    else:
                        if e.scale is not None:
                            t = dequantize(t, _read_scale(f, e), want, block)
                        t = t.to(device=device, dtype=want)
                        if e.ours.endswith("tid2eid"):
                            _check_table(t, e.stored, model.cfg.n_routed_experts)
                        _assign(model, e.ours, t)
                    bar.update()


@contextmanager
def open_safetensors(file: Path, backend: str = "mmap") -> Iterator:
    """safe_open whose failures name the file."""
    try:
        handle = safe_open(str(file), framework="pt", device="cpu", backend=backend)
    except Exception as e:  # noqa: BLE001 (safetensors raises its own SafetensorError for corrupt files)
        raise CheckpointError(f"{file}: cannot be opened as a safetensors file ({e})") from None
    with handle as f:
        yield f


def read_tensor(f, info: TensorInfo) -> torch.Tensor:
    try:
        return f.get_tensor(info.name)
    except Exception as e:  # noqa: BLE001 (as above)
        raise CheckpointError(f"{info.file}: tensor {info.name!r} cannot be read ({e})") from None


def _read_scale(f, e: Entry) -> torch.Tensor:
    if e.scale.file == e.stored.file:
        return read_tensor(f, e.scale)
    with open_safetensors(e.scale.file, backend="pread") as g:
        return read_tensor(g, e.scale)


def _check_table(t: torch.Tensor, info: TensorInfo, n_experts: int) -> None:
    lo, hi = int(t.min()), int(t.max())
    if lo < 0 or hi >= n_experts:
        raise CheckpointError(
            f"{info.file}: tensor {info.name!r}: hash table holds expert ids in [{lo}, {hi}]; "
            f"expected ids in [0, {n_experts - 1}]"
        )


def _is_param(model: nn.Module, name: str) -> bool:
    module, _, leaf = name.rpartition(".")
    return leaf in model.get_submodule(module)._parameters


def _assign(model: nn.Module, name: str, t: torch.Tensor) -> None:
    """Put `t` in place of the meta tensor `name` (parameter or buffer)."""
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name)
    if leaf in module._parameters:
        old = module._parameters[leaf]
        module._parameters[leaf] = nn.Parameter(t, requires_grad=old.requires_grad)
    else:
        module._buffers[leaf] = t
