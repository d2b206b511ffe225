"""Match a checkpoint's tensors (from the file headers) to a model's parameters, before reading data.

The plan pairs each model tensor with the stored tensor that fills it (and its block scale when
quantised) and collects every mismatch at once: missing and unexpected tensors, wrong shapes,
dtypes that cannot fill the parameter, quantised weights without their scale. `load_model` raises
them; `inspect_checkpoint` reports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import CheckpointError, listing
from .header import TensorInfo
from .layouts import detect_layout, from_checkpoint_name, to_checkpoint_name
from .official import FP8_BLOCK, SCALE_DTYPES, is_quantized, scale_name, stored_shape, weight_of_scale

PLAIN_FLOATS = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Entry:
    """Model tensor `ours` is filled from `stored` (dequantised with `scale` when that is set)."""

    ours: str
    stored: TensorInfo
    scale: TensorInfo | None = None


@dataclass
class Plan:
    layout: str
    entries: list[Entry] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # checkpoint names the model needs
    unexpected: list[TensorInfo] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one sentence each, naming file and tensor

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.problems)

    def error(self, folder: Path, files: list[Path]) -> CheckpointError:
        lines = [f"{folder}: the checkpoint does not match the model its config.json describes:"]
        lines += [f"  - {p}" for p in self.problems[:10]]
        if len(self.problems) > 10:
            lines.append(f"  - and {len(self.problems) - 10} more problems")
        if self.missing:
            where = listing([f.name for f in files], 3)
            names = listing(self.missing)
            lines.append(f"  - {len(self.missing)} missing tensors (in none of {where}): {names}")
        if self.unexpected:
            shown = [f"{t.name} ({t.file.name})" for t in self.unexpected]
            lines.append(
                f"  - {len(self.unexpected)} unexpected tensors the model has no place for: {listing(shown)}"
            )
        return CheckpointError("\n".join(lines))


def make_plan(
    tensors: dict[str, TensorInfo], expected: dict[str, torch.Tensor], fp8_block: tuple[int, int] = FP8_BLOCK
) -> Plan:
    """Stored tensors (checkpoint names) x the model's state_dict on meta (our names) -> Plan."""
    plan = Plan(layout=detect_layout(set(tensors)))
    scales: dict[str, TensorInfo] = {}
    candidates: list[TensorInfo] = []
    for name, info in tensors.items():
        weight = weight_of_scale(name)
        if weight in tensors and is_quantized(tensors[weight].dtype):
            scales[weight] = info
        else:
            candidates.append(info)

    seen: dict[str, TensorInfo] = {}
    for info in candidates:
        ours = from_checkpoint_name(info.name, plan.layout)
        if ours is None or ours not in expected:
            plan.unexpected.append(info)
            if info.name in scales:
                plan.unexpected.append(scales[info.name])
            continue
        if ours in seen:
            plan.problems.append(
                f"{info.where()} and {seen[ours].where()} both fill the model's {ours!r}; keep one"
            )
            continue
        seen[ours] = info
        scale = scales.get(info.name)
        problem = _check(info, scale, ours, expected[ours], fp8_block)
        if problem:
            plan.problems.append(problem)
        else:
            plan.entries.append(Entry(ours, info, scale))
    plan.missing = [to_checkpoint_name(n, plan.layout) for n in expected if n not in seen]
    return plan


def _check(
    info: TensorInfo, scale: TensorInfo | None, ours: str, want: torch.Tensor, fp8_block: tuple[int, int]
) -> str | None:
    """Why `info` (+ `scale`) cannot fill parameter `ours` shaped like `want`, or None when it can."""
    shape, where = tuple(want.shape), info.where()
    target = f"the model's {ours!r} ({_dt(want.dtype)} {list(shape)})"
    if not want.is_floating_point():
        if info.dtype is None or info.dtype.is_floating_point or info.dtype == torch.bool:
            return f"{where}: dtype {info.dtype_name} cannot fill {target}; expected an integer tensor"
        if scale is not None:
            return f"{where}: an integer table has no block scale, yet {scale.name!r} is stored"
        if info.shape != shape:
            return f"{where}: shape {list(info.shape)}, expected {list(shape)} for {target}"
        return None
    if is_quantized(info.dtype):
        kind = "FP8" if info.dtype == torch.float8_e4m3fn else "packed FP4"
        if scale is None:
            return (
                f"{where}: {kind} weight ({info.dtype_name}) without its block scale "
                f"{scale_name(info.name)!r}; a quantised weight cannot be read without it"
            )
        wshape, sshape = stored_shape(info.dtype, shape, fp8_block)
        if wshape is None:
            return f"{where}: {kind} storage ({info.dtype_name}) cannot hold {target}"
        if info.shape != wshape:
            return f"{where}: {kind} weight of shape {list(info.shape)}, expected {list(wshape)} for {target}"
        if scale.dtype not in SCALE_DTYPES:
            return f"{scale.where()}: scale dtype {scale.dtype_name}, expected F8_E8M0 (ue8m0) or F32"
        if scale.shape != sshape:
            return (
                f"{scale.where()}: scale of shape {list(scale.shape)}, "
                f"expected {list(sshape)} for {target}"
            )
        return None
    if info.dtype in PLAIN_FLOATS:
        if info.shape != shape:
            return f"{where}: shape {list(info.shape)}, expected {list(shape)} for {target}"
        return None
    return (
        f"{where}: dtype {info.dtype_name} cannot fill {target}; "
        f"expected a floating tensor or FP8/FP4 with a scale"
    )


def _dt(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
