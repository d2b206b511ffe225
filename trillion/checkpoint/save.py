"""`save_model`: a model -> a checkpoint folder in the "hf" or "deepseek" (official release) layout.

  hf        config.json (transformers' DeepseekV4Config keys + "dtype") and model.safetensors, or
            model-0000i-of-0000n.safetensors + model.safetensors.index.json past `max_shard_bytes`;
            names through `layouts.HF_RULES`; `transformers.AutoModelForCausalLM` loads it.
  deepseek  the official release: DeepSeek's names, each tensor stored as `official_storage` says
            (FP8 / FP4 with UE8M0 `.scale` tensors, bf16, fp32, int64), config.json with the
            release's `quantization_config` and `expert_dtype`.

Shards are filled in state_dict order (a layer's tensors stay together) and built one at a time,
so a save needs the model plus one shard of memory. Beside them: generation_config.json and, with a
tokenizer, tokenizer_config.json and special_tokens_map.json (side_files.py). The folder is written
atomically, and only a checkpoint's own files are ever replaced in it (atomic.py).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from ..errors import UserError
from ..model.dtypes import param_dtype
from ..quant.swap import is_quantized
from .atomic import SIDE_FILES, SIDE_FOLDERS, atomic_folder, normal_file_mode
from .dtype import as_dtype, dtype_name
from .errors import CheckpointError, listing
from .index import INDEX, SINGLE, index_dict, shard_name
from .layouts import DEEPSEEK, HF, LAYOUTS, to_checkpoint_name
from .official import EXPERT_DTYPE, QUANTIZATION_CONFIG, check_encodable, encode_official, stored_nbytes
from .side_files import TOKENIZER_JSON, write_side_files

DEFAULT_MAX_SHARD_BYTES = 5 * 1000**3


def save_model(
    model: nn.Module,
    path: str | Path,
    *,
    layout: str | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    dtype: torch.dtype | str | None = None,
    copy_files_from: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `model` (a Transformer) to the folder `path`, atomically.

    layout: "hf" or "deepseek" (None: hf, or deepseek for a quantised model). dtype (hf, or a quantised
    model's float tensors): store floating tensors in this compute dtype (the float32 ones stay
    float32); None keeps each tensor's own dtype. The deepseek layout fixes every tensor's storage,
    so it takes no dtype.
    copy_files_from: a folder whose tokenizer files, generation_config.json and `encoding/` are copied
    alongside, or a tokenizer.json file. Those of tokenizer_config.json, special_tokens_map.json and
    generation_config.json that are not copied are written from the config (side_files.py), so that
    transformers, vLLM and lm-eval find BOS / EOS, the chat template and generation defaults.
    An existing folder holding a checkpoint we wrote has its checkpoint replaced; any other non-empty
    folder is refused unless overwrite=True, and only a checkpoint's own files are ever replaced:
    everything else in the folder is kept (atomic.py).
    A model quantised by `trillion.quant.quantize_model` is written as it is in memory (codes and
    scales under the release's names, its scheme in config.json; see docs/quantization.md).
    Returns the folder.
    """
    if is_quantized(model):
        if layout not in (None, DEEPSEEK):
            raise UserError(
                "a quantised model is saved as it is in memory, in the deepseek layout (codes and scales "
                f"under the release's names); got layout={layout!r}: pass layout=None"
            )
        from .quantized import save_quantized  # it builds on this module

        return save_quantized(
            model,
            path,
            max_shard_bytes=max_shard_bytes,
            dtype=as_dtype(dtype) if dtype is not None else None,
            copy_files_from=copy_files_from,
            overwrite=overwrite,
        )
    layout = layout or HF
    if layout not in LAYOUTS:
        raise UserError(f"unknown checkpoint layout {layout!r}; expected one of {LAYOUTS}")
    if layout == DEEPSEEK and dtype is not None:
        raise UserError("the deepseek layout fixes each tensor's storage; pass dtype=None")
    dtype = as_dtype(dtype) if dtype is not None else None
    state = model.state_dict()
    if layout == HF:
        compute = dtype or model.dtype
        config = {**model.cfg.to_hf_dict(), "dtype": dtype_name(compute), "torch_dtype": dtype_name(compute)}
        sizes = {n: t.numel() * _hf_dtype(n, t, dtype).itemsize for n, t in state.items()}
    else:
        for n, t in state.items():
            check_encodable(n, tuple(t.shape))
        config = {
            **model.cfg.to_hf_dict(),
            "dtype": "bfloat16",
            "torch_dtype": "bfloat16",
            "quantization_config": dict(QUANTIZATION_CONFIG),
            "expert_dtype": EXPERT_DTYPE,
        }
        sizes = {n: stored_nbytes(n, tuple(t.shape)) for n, t in state.items()}
    return write_checkpoint(
        path,
        state,
        lambda n, t: _encode(n, t, layout, dtype),
        config,
        sizes=sizes,
        max_shard_bytes=max_shard_bytes,
        copy_files_from=copy_files_from,
        overwrite=overwrite,
    )


def write_checkpoint(
    path: str | Path,
    state: dict[str, torch.Tensor],
    encode: Callable[[str, torch.Tensor], dict[str, torch.Tensor]],
    config: dict,
    *,
    sizes: dict[str, int] | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    copy_files_from: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """The one checkpoint writer: the folder `path`, written atomically, holding `state` in shards.

    encode(name, tensor) -> {checkpoint name: tensor as stored}; sizes: stored bytes per state name
    (default: as in memory), which split the shards in state order; then the index (when sharded),
    config.json, the side files of `copy_files_from` and those it lacks (side_files.py). overwrite: as save_model's.
    """
    on_meta = [n for n, t in state.items() if t.is_meta]
    if on_meta:
        raise CheckpointError(f"cannot save a model whose tensors are on meta (no data): {listing(on_meta)}")
    if max_shard_bytes <= 0:
        raise UserError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
    if sizes is None:
        sizes = {n: t.numel() * t.element_size() for n, t in state.items()}
    shards = _split(list(sizes.items()), max_shard_bytes)
    with atomic_folder(Path(path), overwrite=overwrite) as tmp:
        weight_map, total = {}, 0
        for i, names in enumerate(shards):
            file = SINGLE if len(shards) == 1 else shard_name(i + 1, len(shards))
            tensors: dict[str, torch.Tensor] = {}
            for n in names:
                tensors.update(encode(n, state[n]))
            _write_shard(tmp / file, tensors)
            weight_map.update(dict.fromkeys(tensors, file))
            total += sum(t.numel() * t.element_size() for t in tensors.values())
            del tensors
        if len(shards) > 1:
            (tmp / INDEX).write_text(json.dumps(index_dict(weight_map, total), indent=2) + "\n")
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        if copy_files_from is not None:
            _copy_side_files(Path(copy_files_from), tmp)
        write_side_files(tmp, config, final=Path(path))
    return Path(path)


def _hf_dtype(name: str, t: torch.Tensor, dtype: torch.dtype | None) -> torch.dtype:
    return param_dtype(name, dtype) if dtype is not None and t.is_floating_point() else t.dtype


def _encode(name: str, t: torch.Tensor, layout: str, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    t = t.detach().cpu()
    if layout == DEEPSEEK:
        return encode_official(name, t)
    return {to_checkpoint_name(name, HF): t.to(_hf_dtype(name, t, dtype)).contiguous()}


def _split(sizes: list[tuple[str, int]], max_bytes: int) -> list[list[str]]:
    """Greedy, in order: a new shard starts when the next tensor would overflow the current one."""
    shards: list[list[str]] = [[]]
    used = 0
    for name, nbytes in sizes:
        if shards[-1] and used + nbytes > max_bytes:
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += nbytes
    return shards


def _write_shard(file: Path, tensors: dict[str, torch.Tensor]) -> None:
    write_safetensors(file, tensors)


def write_safetensors(file: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    """A safetensors file whose permissions follow the umask like any new file (safetensors itself
    creates it 0600, so others could not read a model they were given)."""
    # safetensors refuses tensors that share memory: a view into a larger tensor (the engine's
    # stacked expert weights, trillion.engine.experts.stack_experts) is written from its own copy
    owned = {
        k: t if t.untyped_storage().nbytes() == t.numel() * t.element_size() else t.clone()
        for k, t in tensors.items()
    }
    file = Path(file)
    save_file(owned, str(file), metadata={"format": "pt"})
    file.chmod(normal_file_mode(file.parent))


def _copy_side_files(src: Path, dst: Path) -> None:
    if src.is_file():  # a tokenizer.json of its own (a training run's)
        shutil.copy2(src, dst / TOKENIZER_JSON)
        return
    if not src.is_dir():
        return
    for name in SIDE_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
    for name in SIDE_FOLDERS:
        if (src / name).is_dir():
            shutil.copytree(src / name, dst / name)
