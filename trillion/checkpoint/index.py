"""Where a checkpoint's tensors live: one `model.safetensors`, or shards listed by an index.

    model.safetensors                                   single file (no index)
    model-00001-of-00003.safetensors ...                shards
    model.safetensors.index.json                        {"metadata": {"total_size": bytes},
                                                         "weight_map": {tensor name: shard file}}

The index is the authority: every shard it names must exist and hold exactly the tensors it lists.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import CheckpointError, listing
from .header import TensorInfo, read_header

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"


def shard_name(i: int, n: int) -> str:
    """Name of shard i (1-based) of n, as transformers writes them."""
    return f"model-{i:05d}-of-{n:05d}.safetensors"


def read_index(folder: Path) -> dict[str, str] | None:
    """The index's weight_map {tensor name: shard file name}, or None for a single-file checkpoint."""
    path = Path(folder) / INDEX
    if not path.exists():
        return None
    try:
        weight_map = json.loads(path.read_text())["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not an object")
    except (ValueError, KeyError, TypeError) as e:
        msg = f"{path}: not a safetensors index ({e!r}; expected a JSON 'weight_map')"
        raise CheckpointError(msg) from None
    return {str(k): str(v) for k, v in weight_map.items()}


def shard_files(folder: Path) -> list[Path]:
    """The checkpoint's safetensors files in order (the index's shards, or model.safetensors)."""
    folder = Path(folder)
    weight_map = read_index(folder)
    if weight_map is not None:
        files = sorted(set(weight_map.values()))
        for name in files:
            if not (folder / name).is_file():
                tensors = [t for t, f in weight_map.items() if f == name]
                raise CheckpointError(
                    f"{folder / INDEX}: shard {name!r} does not exist, yet the index places "
                    f"{len(tensors)} tensors in it (e.g. {listing(tensors, 3)})"
                )
        return [folder / name for name in files]
    if (folder / SINGLE).is_file():
        return [folder / SINGLE]
    found = sorted(p.name for p in folder.glob("*.safetensors"))
    raise CheckpointError(
        f"{folder}: no {SINGLE} and no {INDEX}"
        + (f" (found {listing(found, 5)}; write an index that lists them)" if found else "")
    )


def checkpoint_tensors(folder: Path) -> dict[str, TensorInfo]:
    """Every tensor of the checkpoint in `folder`, from the file headers (no data is read)."""
    folder = Path(folder)
    weight_map = read_index(folder)
    out: dict[str, TensorInfo] = {}
    for file in shard_files(folder):
        tensors, _ = read_header(file)
        if weight_map is not None:
            listed = {t for t, f in weight_map.items() if f == file.name}
            absent, unlisted = sorted(listed - set(tensors)), sorted(set(tensors) - listed)
            if absent:
                raise CheckpointError(
                    f"{folder / INDEX} places tensors in {file.name} that it does not hold: {listing(absent)}"
                )
            if unlisted:
                raise CheckpointError(
                    f"{file}: holds tensors that {INDEX} does not list: {listing(unlisted)}"
                )
        for name, info in tensors.items():
            if name in out:
                raise CheckpointError(f"{file.name}: tensor {name!r} is also stored in {out[name].file.name}")
            out[name] = info
    return out


def index_dict(weight_map: dict[str, str], total_size: int) -> dict:
    return {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
