"""The settings of one training run: plain data, no torch, saved as `train_config.json` in the run folder.

Defaults follow DeepSeek-V3/V4 where they published a value (MTP weight 0.3, balance alpha 1e-4,
weight decay 0.1, gradient clip 1.0); the rest is the recipe of the shipped demo model
(docs/training.md). Everything that changes the loss trajectory is a field here, so a run folder
says how to reproduce itself; `RESUME_FREE` names the fields a resumed run may change.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError

# Fields that may differ between a run and its resumption without changing the losses so far.
RESUME_FREE = frozenset(
    {
        "out",
        "stop_after",
        "threads",
        "progress",
        "resume",
        "save_every",
        "keep",
        "log_every",
        "eval_every",
        "eval_batches",
    }
)


@dataclass(frozen=True)
class TrainConfig:
    """One `trillion train` run. `flavor`: a FLAVORS name, a shipped model's name (its config) or a
    config.json path; `out`: the run folder."""

    flavor: str = "demo"
    data: tuple[str, ...] = ("stdlib",)
    out: str = "runs/train"

    # Data and tokenizer.
    vocab_size: int | None = None  # None: the flavor's vocab_size
    seq_len: int = 256
    batch: int = 8
    heldout: float = 0.02  # fraction of documents kept for evaluation (split by a hash of the name)
    max_docs: int | None = None  # take only the first N documents (in name order): quick runs

    # Optimisation: Muon on the blocks' matrices, AdamW elsewhere (see optim.py).
    steps: int = 800
    lr: float = 5e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    # The cosine reaches its floor at this step; later steps hold lr * min_lr_ratio. None: `steps`.
    # `--resume --steps N` past a run's end keeps the run's own value, so the steps already taken
    # keep their schedule (optim.lr_factor).
    decay_steps: int | None = None
    warmup: int = 50
    weight_decay: float = 0.1
    clip: float = 1.0
    adam_betas: tuple[float, float] = (0.9, 0.95)
    muon_momentum: float = 0.95

    # DeepSeek's auxiliary objectives.
    mtp_weight: float = 0.3  # V3: 0.3 for most of pre-training
    balance_alpha: float = 1e-4  # sequence-wise balance loss (V3 section 2.1.2)
    bias_gamma: float = 1e-2  # bias update speed; V3 used 0.001 over a far longer run
    indexer_weight: float = 1.0  # KL alignment of the lightning indexer (V3.2); 0 = off
    passkey: float = 0.0  # fraction of each batch replaced by synthetic passkey retrieval (train/passkey.py)

    activation_checkpointing: bool = False
    seed: int = 0

    # Bookkeeping: how often, how many; none of these changes the trajectory.
    log_every: int = 10
    eval_every: int = 100
    eval_batches: int = 8  # held-out batches per periodic evaluation (the final one uses all)
    save_every: int = 100
    keep: int = 2
    stop_after: int | None = None  # stop this invocation after N steps; the schedule still spans `steps`
    threads: int | None = None
    progress: bool = True
    resume: bool = False

    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes stored with the run

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", tuple(str(d) for d in self.data))
        object.__setattr__(self, "adam_betas", tuple(float(b) for b in self.adam_betas))
        checks = {
            "seq_len": self.seq_len >= 2,
            "batch": self.batch >= 1,
            "steps": self.steps >= 1,
            "heldout": 0.0 < self.heldout < 1.0,
            "warmup": self.warmup >= 0,
            "keep": self.keep >= 1,
            "lr": self.lr > 0,
            "min_lr_ratio": 0.0 <= self.min_lr_ratio <= 1.0,
            "decay_steps": self.decay_steps is None or self.decay_steps >= 1,
            "threads": self.threads is None or self.threads >= 1,
            "passkey": 0.0 <= self.passkey <= 1.0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise UserError(f"TrainConfig: invalid {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}")
        if not self.data:
            raise UserError("TrainConfig: data is empty; give 'stdlib' or paths of text files or folders")

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["data"], d["adam_betas"] = list(self.data), list(self.adam_betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(f"unknown training settings {unknown}; known: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (ValueError, TypeError) as e:  # not JSON, or not these settings
            raise UserError(f"{path}: not a training configuration ({e})") from None

    def trajectory_diff(self, other: TrainConfig) -> list[str]:
        """Fields (outside RESUME_FREE) whose values differ: a resume with these would not be exact."""
        a, b = self.to_dict(), other.to_dict()
        return sorted(k for k in a if k not in RESUME_FREE and a[k] != b[k])
