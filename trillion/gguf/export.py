"""`export_gguf`: a trillion model -> one GGUF file that llama.cpp's `deepseek4` architecture runs.

Steps:
  1. refuse a config llama.cpp cannot run, naming every reason (`spec.check_llamacpp_support`);
  2. plan the GGUF tensors from the model's tensor names (`spec.tensor_plan`): every tensor the loader
     needs must be there, every main-model tensor must have a GGUF name; quantised modules (a model
     loaded with its trillion.quant scheme) are read back dequantised by their reference decoder;
  3. write the metadata (general.*, the deepseek4.* hyper-parameters, the tokenizer) and the tensor
     infos, then stream the tensors one at a time (routed experts stacked per projection), so peak
     memory is the model plus one stacked tensor. The file appears only once complete (written beside
     OUT under a temporary name, then renamed).

Types (`--type`): f32 writes every tensor float32; f16 and q8_0 store the "matrix" tensors of
`spec` (attention, indexer wq_b, experts, embedding, head) as F16 or Q8_0 (blocks of 32 inputs, one
f16 scale each; a matrix whose input width is not a multiple of 32 falls back to F16) and keep the rest
float32. The hash-routing tables are int32.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..model import Transformer
from .spec import ARCH, INDEX, MATRIX, TensorPlan, check_llamacpp_support, hparams, tensor_plan
from .vocab import Vocab, no_vocab, read_vocab, vocab_metadata

TYPES = ("f32", "f16", "q8_0")
Q8_BLOCK = 32


def require_gguf():
    """The `gguf` package (pip install 'trillion[gguf]'), or ImportError saying so."""
    try:
        import gguf
    except ImportError:
        raise ImportError(
            "GGUF export needs the `gguf` package: pip install 'trillion[gguf]' (or pip install gguf)"
        ) from None
    return gguf


def export_gguf(
    model: Transformer,
    out: str | Path,
    *,
    type: str = "f32",
    tokenizer: str | Path | Vocab | None = None,
    name: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `model` to the GGUF file `out` for llama.cpp; returns the path.

    type: "f32", "f16" or "q8_0" (see the module docstring). tokenizer: a tokenizer.json (or its
    folder), a `Vocab`, or None for an id-only vocabulary. name: general.name (default: the
    config's). overwrite: replace an existing `out` (otherwise refused).
    """
    gguf = require_gguf()
    if type not in TYPES:
        raise UserError(f"type = {type!r}; expected one of {TYPES}")
    cfg = model.cfg
    check_llamacpp_support(cfg)
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: exists; choose another name or pass overwrite (--force)")
    if out.is_dir():
        raise IsADirectoryError(f"{out}: is a folder; the GGUF export is one file")
    vocab = (
        tokenizer if isinstance(tokenizer, Vocab) else read_vocab(tokenizer, cfg) if tokenizer else no_vocab()
    )

    sources = _float_sources(model)
    plan = tensor_plan(cfg, set(sources))
    qtypes = {
        "f32": gguf.GGMLQuantizationType.F32,
        "f16": gguf.GGMLQuantizationType.F16,
        "q8_0": gguf.GGMLQuantizationType.Q8_0,
    }
    file_types = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    writer = gguf.GGUFWriter(tmp, arch=ARCH)
    try:
        writer.add_name(name or Path(cfg.name).name or out.stem)  # a folder config names its path
        writer.add_file_type(file_types[type])
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        for key, value in {**hparams(cfg), **vocab_metadata(vocab)}.items():
            _add_value(writer, gguf, key, value)

        storage = []  # (plan entry, ggml type) in write order
        for p in plan:
            shape = _shape(p, sources)
            qtype = _storage_type(p, shape, type, qtypes, gguf)
            storage.append((p, qtype))
            nbytes = _nbytes(shape, qtype, gguf)
            writer.add_tensor_info(p.gguf_name, shape, np.dtype(np.float32), nbytes, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for p, qtype in storage:
            writer.write_tensor_data(_encode(_materialise(p, sources), qtype, gguf))
        writer.close()
        os.replace(tmp, out)
    finally:
        writer.close()
        if tmp.exists():
            tmp.unlink()
    return out


# ---------------------------------------------------------------------- tensors


def _float_sources(model: Transformer) -> dict[str, tuple[tuple[int, ...], Callable[[], torch.Tensor]]]:
    """name -> (shape, getter of the float tensor); a quantised module's weight is dequantised on read."""
    from ..quant.swap import quantized_modules

    quant = quantized_modules(model)
    out: dict[str, tuple[tuple[int, ...], Callable[[], torch.Tensor]]] = {}
    for key, t in model.state_dict().items():
        if key.rpartition(".")[0] in quant:
            continue
        out[key] = (tuple(t.shape), lambda t=t: t)
    for mod, q in quant.items():
        out[f"{mod}.weight"] = (
            (q.out_features, q.in_features),
            lambda q=q: q.reference_weight(torch.float32),
        )
    return out


def _shape(p: TensorPlan, sources) -> tuple[int, ...]:
    first = sources[p.sources[0]][0]
    return (len(p.sources), *first) if len(p.sources) > 1 else first


def _storage_type(p: TensorPlan, shape: tuple[int, ...], type: str, qtypes, gguf):
    if p.kind == INDEX:
        return gguf.GGMLQuantizationType.I32
    if p.kind != MATRIX or type == "f32":
        return gguf.GGMLQuantizationType.F32
    if type == "q8_0" and shape[-1] % Q8_BLOCK:
        return gguf.GGMLQuantizationType.F16
    return qtypes[type]


def _nbytes(shape: tuple[int, ...], qtype, gguf) -> int:
    block, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    return int(np.prod(shape)) // block * block_bytes


@torch.no_grad()
def _materialise(p: TensorPlan, sources) -> torch.Tensor:
    parts = [sources[s][1]() for s in p.sources]
    return torch.stack(parts) if len(parts) > 1 else parts[0]


def _encode(t: torch.Tensor, qtype, gguf) -> np.ndarray:
    if qtype == gguf.GGMLQuantizationType.I32:
        return t.to(torch.int32).contiguous().numpy()
    a = t.detach().to(torch.float32).contiguous().numpy()
    if qtype == gguf.GGMLQuantizationType.F32:
        return a
    if qtype == gguf.GGMLQuantizationType.F16:
        return a.astype(np.float16)
    return gguf.quants.quantize(a, qtype)


# ---------------------------------------------------------------------- metadata


def _add_value(writer, gguf, key: str, value) -> None:
    """bool -> BOOL, int -> UINT32, float -> FLOAT32, str -> STRING, lists -> arrays of those."""
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    elif isinstance(value, list):
        writer.add_key_value(key, value, gguf.GGUFValueType.ARRAY, sub_type=_array_type(value, gguf))
    else:
        raise TypeError(f"metadata {key}: unsupported value {value!r}")


def _array_type(values: list, gguf):
    kinds = {type(v) for v in values}
    if kinds <= {int}:
        return gguf.GGUFValueType.INT32
    if kinds <= {int, float}:
        return gguf.GGUFValueType.FLOAT32
    return gguf.GGUFValueType.STRING
