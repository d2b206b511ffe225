"""Quantised checkpoints: save a quantised model as it is in memory, load one so that it stays quantised.

Files. The release's names (the "deepseek" layout: our names), one safetensors file or shards with an
index, and config.json = the model config + `"quantization_config": scheme.to_config()` (+
`"expert_dtype": "fp4"` when routed experts are MXFP4, as in the release; + `modules_to_not_convert`,
transformers' key, naming the modules the scheme covers that `skip` left in float). A quantised Linear stores
`NAME.weight` (codes) and `NAME.scale` in its format's dtypes (linear.py); every other tensor is
stored as the model holds it, or in the compute dtype `save_model(..., dtype=)` names (float32 for
what DeepSeek keeps in float32): a quantised copy of a bf16 model stores its embedding, head and the
rest in bf16, not float32. Either way save -> load gives the same logits when the values are exact
in that dtype (as a bf16 source's are). For `v4-release` this is
the official layout: FP8 E4M3 + UE8M0 [ceil(N/128), ceil(K/128)] and packed E2M1 int8 + UE8M0
[N, K/32], with the release's quantization_config keys.

Loading (`load_model` calls `stored_scheme`, then the one fill loop of load.py):
  1. config.json names the scheme (`quantization_config.scheme`), or the caller asks for v4-release
     on a release checkpoint (DeepSeek's own config has no scheme key);
  2. build the model on meta, cast it, swap in empty quantised modules (quantize_model on meta);
  3. match every stored tensor to the meta model's state_dict by name: quantised codes and scales
     must have exactly their format's dtype and shape, float tensors the right shape; every mismatch
     (naming the file, the tensor and what was expected) is raised at once, before data is read;
  4. read shard by shard; a quantised module is filled once all its tensors are read.

This module builds on trillion.quant (the quantised modules and schemes); trillion.quant knows
nothing of checkpoints.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from ..config import ModelConfig
from ..model import Transformer
from ..model.dtypes import cast_model, param_dtype
from ..quant.linear import QuantLinear
from ..quant.schemes import Scheme, get_scheme
from ..quant.swap import dequantize_model, quantize_model, quantized_modules
from .dtype import dtype_name
from .errors import CheckpointError
from .header import TensorInfo
from .layouts import DEEPSEEK, detect_layout
from .plan import PLAIN_FLOATS, Entry, Plan
from .save import write_checkpoint

NO_QUANT = (False, "none")
KEEP_FLOAT = "modules_to_not_convert"  # transformers' key for the modules a quantisation leaves in float


# ---------------------------------------------------------------------------------------------- save


def quantization_entries(scheme: Scheme, keep_float: list[str] | tuple = ()) -> dict:
    """The keys a quantised checkpoint's config.json adds; keep_float: the modules the scheme covers
    that were left in float (quantize_model's `skip`), under transformers' name for them."""
    out = {"quantization_config": scheme.to_config()}
    if keep_float:
        out["quantization_config"][KEEP_FLOAT] = sorted(keep_float)
    if scheme.experts == "mxfp4":
        out["expert_dtype"] = "fp4"
    return out


def save_quantized(
    model: nn.Module,
    path: str | Path,
    *,
    max_shard_bytes: int,
    dtype: torch.dtype | None = None,
    copy_files_from: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a quantised Transformer to the folder `path` (atomically; see the module docstring).

    dtype: the compute dtype the float (not quantised) tensors are stored in, those DeepSeek keeps in
    float32 staying float32 (`param_dtype`); None keeps each as the model holds it. Quantised codes and
    scales are stored in their formats' dtypes either way.
    """
    scheme = getattr(model, "quant_scheme", None)
    if not isinstance(scheme, Scheme):
        raise CheckpointError(
            "the model holds quantised modules but no `quant_scheme`; quantise it with quantize_model"
        )
    compute = dtype_name(dtype or model.embed.weight.dtype)
    config = {
        **model.cfg.to_hf_dict(),
        "dtype": compute,
        "torch_dtype": compute,
        **quantization_entries(scheme, _kept_float(model, scheme)),
    }
    state = model.state_dict()
    owned = {f"{n}.{leaf}" for n, m in quantized_modules(model).items() for leaf in m.stored_spec()}

    def stored_dtype(name: str, t: torch.Tensor) -> torch.dtype:
        if dtype is None or name in owned or not t.is_floating_point():
            return t.dtype
        return param_dtype(name, dtype)

    return write_checkpoint(
        path,
        state,
        lambda n, t: {n: t.detach().cpu().to(stored_dtype(n, t)).contiguous()},
        config,
        sizes={n: t.numel() * stored_dtype(n, t).itemsize for n, t in state.items()},
        max_shard_bytes=max_shard_bytes,
        copy_files_from=copy_files_from,
        overwrite=overwrite,
    )


def _kept_float(model: nn.Module, scheme: Scheme) -> list[str]:
    return [n for n, m in model.named_modules() if type(m) is nn.Linear and scheme.format_for(n)]


def kept_float(raw: dict) -> list[str]:
    """The modules a checkpoint's config says were left in float (quantize_model's `skip`)."""
    names = (raw.get("quantization_config") or {}).get(KEEP_FLOAT) or []
    return [str(n) for n in names] if isinstance(names, list) else []


# ---------------------------------------------------------------------------------------------- load


def is_release_config(raw: dict) -> bool:
    """DeepSeek's own config.json: FP8 quantization_config and FP4 experts, no scheme recorded."""
    qc = raw.get("quantization_config") or {}
    return qc.get("quant_method") == "fp8" and raw.get("expert_dtype") == "fp4" and "scheme" not in qc


def requested_scheme(quantize) -> Scheme | None:
    """load_model's `quantize` -> a Scheme, or None for 'as the checkpoint says' / 'float'."""
    if quantize is None or quantize in NO_QUANT:
        return None
    return get_scheme(quantize)


def stored_scheme(raw: dict, quantize=None) -> Scheme | None:
    """The scheme whose quantised modules take the checkpoint's tensors as they are stored, or None.

    A config that records a scheme gives it. DeepSeek's release records none: its FP8 / FP4 tensors are
    read as they are stored when the caller asks for a scheme of that storage (v4-release), and
    dequantised otherwise (load_model's float path).
    """
    qc = raw.get("quantization_config") or {}
    if "scheme" in qc:
        try:
            return Scheme.from_config(qc)
        except (ValueError, TypeError, KeyError) as e:
            raise CheckpointError(f"config.json: quantization_config {qc} cannot be read ({e})") from None
    want = requested_scheme(quantize)
    if (
        want is not None
        and is_release_config(raw)
        and (want.dense, want.experts, want.head) == ("fp8", "mxfp4", None)
    ):
        return want
    return None


def finish(model: Transformer, quantize) -> Transformer:
    """Apply load_model's `quantize` to a model loaded as stored (float or quantised)."""
    if quantize is None:
        return model
    if quantize in NO_QUANT:
        return dequantize_model(model) if quantized_modules(model) else model
    want = get_scheme(quantize)
    have = getattr(model, "quant_scheme", None)
    if have is not None and _same_storage(have, want) and have.act_quant == want.act_quant:
        model.quant_scheme = want
        return model
    if have is not None:
        dequantize_model(model)
    return quantize_model(model, want)


def _same_storage(a: Scheme, b: Scheme) -> bool:
    return (a.dense, a.experts, a.head) == (b.dense, b.experts, b.head) and (
        a.group_size == b.group_size or "int4" not in (a.dense, a.experts, a.head)
    )


def quantized_meta_model(
    cfg: ModelConfig, scheme: Scheme, dtype: torch.dtype, keep_float: list[str] | tuple = ()
) -> Transformer:
    """The model `cfg` describes, on meta, cast to `dtype`, with empty quantised modules (but for the
    modules named in keep_float)."""
    with torch.device("meta"):
        model = Transformer(cfg)
    cast_model(model, dtype)
    return quantize_model(model, scheme, skip=[f"^{re.escape(n)}$" for n in keep_float])


def match_tensors(tensors: dict[str, TensorInfo], model: Transformer) -> Plan:
    """Pair stored tensors with a (meta) quantised model's state_dict; collect every mismatch.

    Plan.entries name our tensor and the stored one (scale unused: quantised tensors fill their module).
    """
    plan = Plan(layout=detect_layout(set(tensors)))
    if plan.layout != DEEPSEEK:
        plan.problems.append(
            "a quantised checkpoint uses the release's tensor names (layout 'deepseek'), but these have "
            "transformers' `model.` prefixes"
        )
        return plan
    expected = model.state_dict()
    owners = {}
    for mname, m in quantized_modules(model).items():
        for leaf, spec in m.stored_spec().items():
            owners[f"{mname}.{leaf}"] = (mname, m, leaf, spec)
    for name, want in expected.items():
        info = tensors.get(name)
        if info is None:
            plan.missing.append(name)
            continue
        problem = _problem(info, want, owners.get(name), model)
        if problem:
            plan.problems.append(problem)
        else:
            plan.entries.append(Entry(name, info))
    plan.unexpected = [info for name, info in tensors.items() if name not in expected]
    return plan


def _problem(info: TensorInfo, want: torch.Tensor, owner, model) -> str | None:
    where = info.where()
    if owner is not None:
        mname, m, leaf, (shape, dtypes) = owner
        scheme = getattr(model, "quant_scheme", None)
        what = (
            f"the {m.fmt} {'codes' if leaf == 'weight' else 'scales'} of {mname}.weight "
            f"[{m.out_features}, {m.in_features}] (scheme {scheme.name!r})"
        )
        if info.dtype not in dtypes:
            names = " or ".join(dtype_name(d) for d in dtypes)
            return f"{where}: dtype {info.dtype_name}, expected {names} for {what}"
        if tuple(info.shape) != tuple(shape):
            return f"{where}: shape {list(info.shape)}, expected {list(shape)} for {what}"
        return None
    target = f"the model's {info.name!r} ({dtype_name(want.dtype)} {list(want.shape)})"
    if want.is_floating_point():
        if info.dtype not in PLAIN_FLOATS:
            return f"{where}: dtype {info.dtype_name} cannot fill {target}; expected a floating tensor"
    elif info.dtype is None or info.dtype.is_floating_point or info.dtype == torch.bool:
        return f"{where}: dtype {info.dtype_name} cannot fill {target}; expected an integer tensor"
    if tuple(info.shape) != tuple(want.shape):
        return f"{where}: shape {list(info.shape)}, expected {list(want.shape)} for {target}"
    return None


def quantized_plan(tensors: dict[str, TensorInfo], cfg: ModelConfig, raw: dict) -> Plan | None:
    """For a checkpoint whose config records a scheme: its tensors matched against the quantised
    model (what `inspect_checkpoint` should report); None for any other checkpoint."""
    scheme = stored_scheme(raw)
    if scheme is None:
        return None
    return match_tensors(tensors, quantized_meta_model(cfg, scheme, torch.float32, kept_float(raw)))


def materialize(m: QuantLinear, device: torch.device) -> None:
    """Give a meta QuantLinear real (empty) buffers on `device` before load_stored fills them."""
    for name, b in list(m.named_buffers(recurse=False)):
        if b.is_meta:
            setattr(m, name, torch.empty(b.shape, dtype=b.dtype, device=device))
