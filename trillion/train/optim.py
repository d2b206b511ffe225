"""Optimisers and the learning-rate schedule, as DeepSeek-V4 trains (V4 report, section 3).

* Muon (torch.optim.Muon) for the matrices of the transformer blocks and the MTP block: attention
  and expert projections, the router, the mHC dynamic projections (`hc_*_fn`), the compressor and
  indexer projections, the MTP `e_proj` / `h_proj`. Its update is rescaled to AdamW's RMS
  (`adjust_lr_fn="match_rms_adamw"`, Moonshot's rule, the same idea as V4's rescaling) so one
  learning rate serves both. torch's Muon runs one Newton-Schulz schedule; V4's hybrid two-stage
  schedule is not reproduced.
* AdamW for the rest, as V4 lists it: the embedding, the prediction head (`head`, `hc_head_*`, also
  the MTP block's own), the static biases and gating factors of mHC (`hc_*_base`, `hc_*_scale`),
  RMSNorm weights, plus attention sinks and the compressors' positional biases (`ape`). Weight
  decay on its matrices only.
* Neither touches the routers' balancing `bias`: balance.update_bias moves it outside the gradient.
* Schedule: linear warm-up, then cosine decay to `min_lr_ratio * lr` at the last step (or at
  `decay_steps`, after which the rate stays at that floor: how a finished run is extended). It is
  a pure function of the step, so resuming needs no scheduler state.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import TrainConfig

NO_OPTIMIZER = ("gate.bias",)


def param_kind(name: str, p: torch.Tensor) -> str | None:
    """'muon', 'adamw', 'adamw_nodecay', or None (not optimised) for parameter `name`."""
    if name.endswith(NO_OPTIMIZER) or not p.requires_grad:
        return None
    leaf = name.rsplit(".", 1)[-1]
    in_block = name.startswith(("layers.", "mtp."))
    head_like = leaf.startswith("hc_head_")
    if p.ndim == 2 and in_block and not head_like and leaf != "ape":
        return "muon"
    return "adamw" if p.ndim >= 2 else "adamw_nodecay"


def build_optimizers(model: nn.Module, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
    """{"muon": Muon, "adamw": AdamW} over the model's parameters (see the module docstring)."""
    groups: dict[str, list[tuple[str, torch.Tensor]]] = {"muon": [], "adamw": [], "adamw_nodecay": []}
    for name, p in model.named_parameters():
        kind = param_kind(name, p)
        if kind is not None:
            groups[kind].append((name, p))
    opts: dict[str, torch.optim.Optimizer] = {}
    if groups["muon"]:
        opts["muon"] = torch.optim.Muon(
            [p for _, p in groups["muon"]],
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            momentum=cfg.muon_momentum,
            adjust_lr_fn="match_rms_adamw",
        )
    adam_groups = [
        {"params": [p for _, p in groups["adamw"]], "weight_decay": cfg.weight_decay},
        {"params": [p for _, p in groups["adamw_nodecay"]], "weight_decay": 0.0},
    ]
    opts["adamw"] = torch.optim.AdamW(
        [g for g in adam_groups if g["params"]], lr=cfg.lr, betas=cfg.adam_betas, eps=1e-8
    )
    for opt in opts.values():
        for g in opt.param_groups:
            g["base_lr"] = cfg.lr
    # Parameter names in each optimiser's own order: optimizer state is saved by name (state.py).
    names = {id(p): n for n, p in model.named_parameters()}
    for opt in opts.values():
        opt.param_names = [names[id(p)] for g in opt.param_groups for p in g["params"]]
    return opts


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the base learning rate at (0-based) `step`."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    span = max(1, (cfg.decay_steps or cfg.steps) - cfg.warmup)
    progress = min(1.0, (step - cfg.warmup) / span)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine


def set_lr(opts: dict[str, torch.optim.Optimizer], step: int, cfg: TrainConfig) -> float:
    f = lr_factor(step, cfg)
    for opt in opts.values():
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * f
    return cfg.lr * f
