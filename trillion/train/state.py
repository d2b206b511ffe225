"""Training checkpoints: the model in the project's transformers-compatible layout, plus what resuming needs.

    RUN/checkpoints/step-00000200/
        config.json, model.safetensors     save_model(..., layout="hf"): transformers loads it
        tokenizer.json                     the run's tokenizer
        trainer_state.json                 step, data cursor, optimiser hyper-parameters, rng info
        trainer_state.safetensors          optimiser tensors by parameter name, rng states (uint8)

No pickle: tensors go to safetensors, everything else to JSON. A checkpoint folder is written
atomically (a temporary folder renamed into place), and only the last `keep` are kept.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from ..checkpoint import load_model, save_model
from ..checkpoint.atomic import atomic_folder
from ..checkpoint.save import write_safetensors
from ..errors import UserError
from .data import Cursor

STATE_JSON = "trainer_state.json"
STATE_TENSORS = "trainer_state.safetensors"
STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass
class TrainerState:
    step: int  # steps completed
    cursor: Cursor
    tokens: int  # training tokens seen
    extra: dict[str, Any]


def checkpoint_dir(run: Path, step: int) -> Path:
    return Path(run) / "checkpoints" / f"step-{step:08d}"


def list_checkpoints(run: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run folder, oldest first."""
    root = Path(run) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / STATE_JSON).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def _flatten_optimizer(name: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    names = opt.param_names
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        pname = names[idx]
        for key, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim/{name}/{pname}/{key}"] = v.detach().contiguous().clone()
            else:
                scalars.setdefault(pname, {})[key] = v
    groups = [
        {**{k: v for k, v in g.items() if k != "params"}, "params": [names[i] for i in g["params"]]}
        for g in sd["param_groups"]
    ]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _restore_optimizer(
    name: str, opt: torch.optim.Optimizer, meta: dict, tensors: dict[str, torch.Tensor]
) -> None:
    index = {n: i for i, n in enumerate(opt.param_names)}
    groups = []
    for g in meta["param_groups"]:
        missing = [n for n in g["params"] if n not in index]
        if missing:
            raise UserError(f"optimizer {name!r} state names parameters the model lacks: {missing[:5]}")
        groups.append({**g, "params": [index[n] for n in g["params"]]})
    state: dict[int, dict[str, Any]] = {}
    prefix = f"optim/{name}/"
    for key, t in tensors.items():
        if key.startswith(prefix):
            pname, _, field = key[len(prefix) :].rpartition("/")
            state.setdefault(index[pname], {})[field] = t
    for pname, fields in meta.get("scalars", {}).items():
        state.setdefault(index[pname], {}).update(fields)
    opt.load_state_dict({"state": state, "param_groups": groups})
    opt.param_names = [n for g in meta["param_groups"] for n in g["params"]]


def save_checkpoint(
    run: Path,
    model: nn.Module,
    opts: dict[str, torch.optim.Optimizer],
    state: TrainerState,
    rng: dict[str, torch.Tensor],
    *,
    tokenizer_file: Path,
    keep: int,
) -> Path:
    """Write RUN/checkpoints/step-N atomically, then drop all but the newest `keep`."""
    dest = checkpoint_dir(run, state.step)
    tensors: dict[str, torch.Tensor] = {f"rng/{k}": v.contiguous() for k, v in rng.items()}
    meta: dict[str, Any] = {}
    for name, opt in opts.items():
        t, m = _flatten_optimizer(name, opt)
        tensors.update(t)
        meta[name] = m
    with atomic_folder(dest) as tmp:
        save_model(model, tmp, layout="hf", copy_files_from=tokenizer_file)
        write_safetensors(tmp / STATE_TENSORS, tensors)
        doc = {
            "step": state.step,
            "cursor": state.cursor.to_dict(),
            "tokens": state.tokens,
            "optimizers": meta,
            "extra": state.extra,
        }
        (tmp / STATE_JSON).write_text(json.dumps(doc, indent=2) + "\n")
    for _, old in list_checkpoints(run)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return dest


def load_checkpoint(
    path: Path, opts_factory
) -> tuple[nn.Module, dict, TrainerState, dict[str, torch.Tensor]]:
    """(model in train mode, optimisers with their state, trainer state, rng states) from a checkpoint.

    opts_factory(model) builds fresh optimisers for the loaded model; their state is then restored.
    """
    path = Path(path)
    model = load_model(path, dtype=torch.float32).train()
    opts = opts_factory(model)
    doc = json.loads((path / STATE_JSON).read_text())
    tensors = load_file(str(path / STATE_TENSORS))
    for name, opt in opts.items():
        if name not in doc["optimizers"]:
            raise UserError(f"{path / STATE_JSON}: no state for optimizer {name!r}")
        _restore_optimizer(name, opt, doc["optimizers"][name], tensors)
    rng = {k.removeprefix("rng/"): v for k, v in tensors.items() if k.startswith("rng/")}
    state = TrainerState(
        int(doc["step"]), Cursor.from_dict(doc["cursor"]), int(doc["tokens"]), doc.get("extra", {})
    )
    return model, opts, state, rng
