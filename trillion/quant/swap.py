"""Quantisation as a module swap after construction (and the swap back).

`quantize_model(model, scheme, *, skip=(), inplace=True)`:
  1. resolve the scheme (a name or a Scheme) and list the nn.Linear modules it quantises
     (`schemes.weight_role` + the scheme's format for that role), less those matching `skip`;
  2. check every one before touching anything: no bias, a shape the format takes, finite values;
     each error names the tensor, and the model is left unchanged;
  3. build all the quantised modules from the float weights, then put them in place;
  4. record the scheme on the model as `model.quant_scheme` (what save_model writes to config.json).
A model on `meta` gets empty quantised modules of the right shapes (the checkpoint loader fills them).

`dequantize_model(model)` swaps every QuantLinear back for an nn.Linear holding its dequantised weight.
"""

from __future__ import annotations

import copy
import itertools
import re

import torch
from torch import nn

from ..errors import UserError
from .linear import FORMATS, QuantLinear
from .schemes import Scheme, get_scheme


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, QuantLinear) for m in model.modules())


def quantized_modules(model: nn.Module) -> dict[str, QuantLinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, QuantLinear)}


def plan_swaps(model: nn.Module, scheme: Scheme, skip=()) -> dict[str, tuple[nn.Linear, str]]:
    """{module name: (the Linear, its format)} of what `scheme` quantises in `model`."""
    skips = [re.compile(s) for s in ([skip] if isinstance(skip, str) else skip)]
    out = {}
    for name, m in model.named_modules():
        if type(m) is not nn.Linear:
            continue
        fmt = scheme.format_for(name)
        if fmt and not any(p.search(name) for p in skips):
            out[name] = (m, fmt)
    return out


def check_weight(name: str, linear: nn.Linear, fmt: str, scheme: Scheme) -> str | None:
    """Why the Linear `name` cannot be quantised to `fmt` (None when it can)."""
    w = linear.weight
    where = f"tensor {name}.weight {list(w.shape)}"
    if linear.bias is not None:
        return f"{where}: has a bias, which quantised Linears do not carry"
    problem = FORMATS[fmt].shape_problem(w.shape[0], w.shape[1], scheme.act_quant, **scheme.params(fmt))
    if problem:
        return f"{where}: scheme {scheme.name!r} stores it as {fmt}, but {problem}"
    if not w.is_meta:
        bad = ~torch.isfinite(w)
        if bool(bad.any()):
            n_nan = int(torch.isnan(w).sum())
            return (
                f"{where}: holds {n_nan} NaN and {int(bad.sum()) - n_nan} Inf values; "
                "a quantised weight needs finite values (its scales come from the absolute maximum)"
            )
    return None


@torch.no_grad()
def quantize_model(model: nn.Module, scheme: str | Scheme, *, skip=(), inplace: bool = True) -> nn.Module:
    """Swap the Linear modules `scheme` covers for quantised ones (see the module docstring).

    skip: regexes (or one) on module names to keep in float, e.g. r"^mtp\\." or r"layers\\.0\\.".
    inplace=False returns a new model that shares every unquantised tensor with `model` (which keeps
    its float weights), so the two cost one float model plus the quantised weights.
    """
    scheme = get_scheme(scheme)
    if is_quantized(model):
        raise UserError(
            f"the model is already quantised (scheme {getattr(model, 'quant_scheme', None)!r}); "
            "dequantize_model it first"
        )
    if not inplace:
        shared = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
        model = copy.deepcopy(model, memo=shared)
    swaps = plan_swaps(model, scheme, skip)
    problems = [p for name, (lin, fmt) in swaps.items() if (p := check_weight(name, lin, fmt, scheme))]
    if problems:
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise UserError(
            f"cannot quantise with scheme {scheme.name!r}:\n  " + "\n  ".join(problems[:10]) + more
        )
    built = {
        name: FORMATS[fmt].from_float(lin.weight, act_quant=scheme.act_quant, **scheme.params(fmt))
        for name, (lin, fmt) in swaps.items()
    }
    for name, module in built.items():
        _set_submodule(model, name, module)
    model.quant_scheme = scheme
    return model


@torch.no_grad()
def dequantize_model(model: nn.Module) -> nn.Module:
    """Swap every QuantLinear for an nn.Linear with its dequantised weight (in place)."""
    for name, q in quantized_modules(model).items():
        device = q.dtype_tag.device
        lin = nn.Linear(q.in_features, q.out_features, bias=False, dtype=q.dtype, device=device)
        if device.type != "meta":
            lin.weight.copy_(q.dequantized_weight())
        _set_submodule(model, name, lin)
    if hasattr(model, "quant_scheme"):
        del model.quant_scheme
    return model


def set_kernel_dtype(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Activation dtype of the int8 / int4 CPU kernels: bfloat16 (the default: fast) or float32 (exact).

    `trillion.engine.experts.stack_experts` (what `LLM(..., compile=True)` does when it is built)
    stacks the experts' codes and scales; set the kernel dtype before it (stacks made earlier keep
    the old scales).
    """
    for m in quantized_modules(model).values():
        m.set_kernel_dtype(dtype)
    return model


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def model_nbytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer (the quantised modules' codes and scales included)."""
    tensors = itertools.chain(model.parameters(), model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors if not t.is_meta)
