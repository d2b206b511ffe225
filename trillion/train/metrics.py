"""Run metrics: JSON lines, and the two charts (loss curve, expert load) drawn with matplotlib.

`metrics.jsonl` holds one object per line: {"kind": "train", "step", "loss", "ce", "mtp_ce",
"mtp_acc", "balance", "indexer_kl", "lr", "grad_norm", "tokens", "tok_per_s", "load"} every
`log_every` steps (loss terms and "load", each gate's expert shares, cover the steps since the last
line; lr and grad_norm are the last step's), and {"kind": "eval", "step", "eval_loss", "eval_ppl",
"eval_tokens"} after each evaluation: periodic ones on `eval_batches` batches spread over the
held-out split, the final one ("final": true) on all of it.
A resumed run first drops the lines past its checkpoint, so the file reads as one run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

METRICS = "metrics.jsonl"
LOSS_PNG = "loss.png"
LOAD_PNG = "expert_load.png"


class Interval:
    """Sums over the steps since the last metrics line: loss terms, expert counts, tokens, seconds."""

    def __init__(self):
        self._reset()

    def _reset(self) -> None:
        self.parts: dict[str, float] = {}
        self.counts: dict[str, Any] = {}
        self.steps, self.tokens, self.seconds = 0, 0, 0.0

    def add(self, parts: dict[str, float], counts: dict[str, Any], tokens: int, seconds: float) -> None:
        for k, v in parts.items():
            self.parts[k] = self.parts.get(k, 0.0) + v
        for k, c in counts.items():
            self.counts[k] = self.counts.get(k, 0) + c
        self.steps, self.tokens, self.seconds = self.steps + 1, self.tokens + tokens, self.seconds + seconds

    def record(self, **fields: Any) -> dict[str, Any]:
        """The "train" line (means of the loss terms, expert shares, tokens/s), then start over."""
        rec = {
            "kind": "train",
            **fields,
            **{k: v / self.steps for k, v in self.parts.items()},
            "tok_per_s": self.tokens / max(self.seconds, 1e-9),
            "load": {n: (c / c.sum()).tolist() for n, c in self.counts.items()},
        }
        self._reset()
        return rec


class MetricsLog:
    def __init__(self, run: Path):
        self.path = Path(run) / METRICS

    def truncate_after(self, step: int) -> None:
        """Drop the records of steps after `step` (what a resumed run will redo)."""
        if not self.path.is_file():
            return
        keep = [
            line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= step
        ]
        self.path.write_text("".join(line + "\n" for line in keep))

    def write(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]


def plot_loss(records: list[dict[str, Any]], path: Path, title: str = "") -> Path | None:
    """Training cross-entropy (main and MTP) and held-out loss against tokens seen."""
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    if not train:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    tok = [r["tokens"] / 1e6 for r in train]
    ax.plot(tok, [r["ce"] for r in train], lw=1, label="train CE (next token)")
    if any("mtp_ce" in r for r in train):
        ax.plot(
            tok,
            [r.get("mtp_ce", float("nan")) for r in train],
            lw=1,
            alpha=0.7,
            label="train CE (MTP, token after next)",
        )
    probes = [r for r in evals if not r.get("final")]
    if probes:
        n = probes[-1]["eval_tokens"]
        ax.plot(
            [r["tokens"] / 1e6 for r in probes],
            [r["eval_loss"] for r in probes],
            "o-",
            ms=3,
            label=f"held-out CE ({n:,} tokens)",
        )
    for r in evals:
        if r.get("final"):
            ax.plot(
                [r["tokens"] / 1e6],
                [r["eval_loss"]],
                "*",
                ms=11,
                color="k",
                label=f"held-out CE, final ({r['eval_tokens']:,} tokens): {r['eval_loss']:.3f}",
            )
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel("cross-entropy (nats)")
    ax.set_title(title or "loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_expert_load(records: list[dict[str, Any]], path: Path) -> Path | None:
    """Left: each gate's expert shares in the last interval. Right: max/mean load per gate over steps."""
    train = [r for r in records if r["kind"] == "train" and r.get("load")]
    if not train:
        return None
    plt = _pyplot()
    names = list(train[-1]["load"])
    last = [train[-1]["load"][n] for n in names]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 0.5 * len(names) + 2.5), dpi=100)
    im = a.imshow(last, aspect="auto", cmap="viridis")
    a.set_yticks(range(len(names)), [_short(n) for n in names])
    a.set_xlabel("expert")
    a.set_title(f"share of routed tokens, step {train[-1]['step']}")
    fig.colorbar(im, ax=a, fraction=0.05)
    steps = [r["step"] for r in train]
    for n in names:
        ratio = [max(r["load"][n]) * len(r["load"][n]) if n in r["load"] else float("nan") for r in train]
        b.plot(steps, ratio, lw=1, label=_short(n))
    b.axhline(1.0, color="k", lw=0.5)
    b.set_xlabel("step")
    b.set_ylabel("max load / mean load")
    b.set_title("imbalance (1 = uniform)")
    b.grid(alpha=0.3)
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _short(gate_name: str) -> str:
    # "layers.3.ffn.gate" -> "layer 3"; "mtp.0.ffn.gate" -> "mtp 0"
    parts = gate_name.split(".")
    return f"{'layer' if parts[0] == 'layers' else parts[0]} {parts[1]}"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
