"""Passkey retrieval (`trillion eval --task passkey`): a key hidden at a chosen depth in filler text,
the model asked to repeat it; accuracy by context length x depth, and the heatmap of it (the
"needle in a haystack" picture).

A prompt of exactly N tokens, in token ids (so the needle's position is exact, whatever the
tokenizer would merge across the joins):

    BOS  HEADER  filler[:a]  NEEDLE(key)  filler[a:F]  QUESTION

F = N - 1 - |HEADER| - |NEEDLE| - |QUESTION| filler tokens, and a = round(depth x F): depth 0 puts
the needle right after the header, depth 1 right before the question. The texts are Python comments
because the filler is Python: the documents of the training corpus (`trillion.train.corpus`, the
standard library by default, which every machine with Python has), in name order, joined by blank
lines, from a start that moves with the trial. The key is a 5-digit number drawn from a generator
seeded by (seed, N, depth, trial). An answer is right when the first number in it is the key.

The model runs through the engine with greedy decoding (`engine_answers`); the grid and the scoring
only need a function from prompts to answers (`run_grid`), which is what the tests stub.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .corpus import load_corpus

HEADER = "# A pass key is hidden in the code below. Find it and remember it.\n"
NEEDLE = "\n# The pass key is {key}. Remember it. {key} is the pass key.\n"
QUESTION = "\n# What is the pass key? The pass key is"
KEY_DIGITS = 5
NEW_TOKENS = 8  # enough for 5 digits in any tokenizer that splits them at most per digit (+ a space)
TRIAL_SHIFT = 4099  # filler tokens the start moves per trial (a prime, so trials see different joins)


@dataclass(frozen=True)
class Prompt:
    ids: list[int]
    key: str
    context: int  # len(ids)
    depth: float
    needle_at: int  # the position of the needle's first token
    needle_len: int


class Haystack:
    """The filler: the corpus's documents as one token stream, encoded as far as the longest prompt needs.

    encode(text) -> token ids (no special tokens)."""

    def __init__(self, encode: Callable[[str], list[int]], sources: Sequence[str] = ("stdlib",), bos_id: int = 0):
        self.encode, self.sources, self.bos_id = encode, tuple(sources), bos_id
        self.header, self.question = encode(HEADER), encode(QUESTION)
        self._stream: list[int] = []
        self._docs = None
        self._next_doc = 0

    def filler(self, start: int, n: int) -> list[int]:
        """n filler tokens from position `start` of the stream."""
        while len(self._stream) < start + n:
            if self._docs is None:
                self._docs = load_corpus(list(self.sources))
            if self._next_doc >= len(self._docs):
                if not self._stream:
                    raise UserError(f"the filler sources {list(self.sources)} hold no text")
                self._stream = self._stream * 2  # a small corpus: repeat it
                continue
            batch = self._docs[self._next_doc : self._next_doc + 64]
            self._next_doc += len(batch)
            for d in batch:
                self._stream += self.encode(d.text + "\n\n")
        return self._stream[start : start + n]

    def prompt(self, context: int, depth: float, key: str, trial: int = 0) -> Prompt:
        """The prompt of `context` tokens with `key` at `depth` (0..1 of the filler)."""
        if not 0.0 <= depth <= 1.0:
            raise UserError(f"depth {depth}: expected a fraction between 0 and 1")
        needle = self.encode(NEEDLE.format(key=key))
        n_filler = context - 1 - len(self.header) - len(needle) - len(self.question)
        if n_filler < 0:
            raise UserError(f"context {context}: a passkey prompt needs at least {context - n_filler} tokens")
        filler = self.filler(trial * TRIAL_SHIFT, n_filler)
        ids, at = assemble(self.bos_id, self.header, filler, needle, self.question, depth)
        return Prompt(ids, key, context, depth, at, len(needle))


def assemble(bos: int, header: list[int], filler: list[int], needle: list[int], question: list[int],
             depth: float) -> tuple[list[int], int]:
    """BOS HEADER filler[:a] NEEDLE filler[a:] QUESTION, a = round(depth x len(filler)) -> (ids, needle position)."""
    a = round(depth * len(filler))
    return [bos, *header, *filler[:a], *needle, *filler[a:], *question], 1 + len(header) + a


class TrainingExamples:
    """Passkey examples for training (`trillion train --passkey FRACTION`): sequences of `length` tokens,
    the prompt of `Haystack.prompt` with the answer after it, `BOS HEADER filler NEEDLE filler QUESTION
    ' KEY.' EOS`, the filler a random stretch of the training stream, the key and its depth random.

    encode(text) -> ids; stream: the packed training tokens (int32)."""

    def __init__(self, encode: Callable[[str], list[int]], stream, length: int, bos_id: int, eos_id: int):
        self.encode, self.stream, self.length, self.bos, self.eos = encode, stream, length, bos_id, eos_id
        self.header, self.question = encode(HEADER), encode(QUESTION)

    def example(self, rng: random.Random) -> list[int]:
        key = str(rng.randrange(10 ** (KEY_DIGITS - 1), 10**KEY_DIGITS))
        needle, answer = self.encode(NEEDLE.format(key=key)), self.encode(f" {key}.")
        n_filler = self.length - 1 - len(self.header) - len(needle) - len(self.question) - len(answer) - 1
        if n_filler < 0:
            raise UserError(f"--passkey needs sequences of at least {self.length - n_filler} tokens; "
                            f"--seq-len is {self.length - 1}")
        start = rng.randrange(0, max(1, len(self.stream) - n_filler))
        filler = [int(t) for t in self.stream[start : start + n_filler]]
        ids, _ = assemble(self.bos, self.header, filler, needle, self.question, rng.random())
        return [*ids, *answer, self.eos]

    def mix(self, batch, fraction: float, rng: random.Random):
        """batch [B, T + 1] with its first round(fraction x B) rows replaced by examples (a new tensor)."""
        import torch

        n = min(batch.shape[0], int(fraction * batch.shape[0] + 0.5))
        if n == 0:
            return batch
        batch = batch.clone()
        batch[:n] = torch.tensor([self.example(rng) for _ in range(n)], dtype=batch.dtype)
        return batch


def make_key(seed: int, context: int, depth: float, trial: int) -> str:
    """A 5-digit key (no leading zero) fixed by these numbers alone."""
    rng = random.Random(f"passkey:{seed}:{context}:{depth}:{trial}")
    return str(rng.randrange(10 ** (KEY_DIGITS - 1), 10**KEY_DIGITS))


def is_correct(answer: str, key: str) -> bool:
    """The first number in the answer is the key."""
    m = re.search(r"\d+", answer)
    return m is not None and m.group() == key


def run_grid(
    answer: Callable[[list[list[int]]], list[str]],
    haystack: Haystack,
    contexts: Sequence[int],
    depths: Sequence[float],
    trials: int = 3,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Every (context, depth) cell with `trials` keys: prompts -> answer(prompts' ids) -> scores.

    answer: the answers to a batch of prompts (one context length at a time), in order."""
    cells = []
    for n in contexts:
        prompts = [haystack.prompt(n, d, make_key(seed, n, d, t), t) for d in depths for t in range(trials)]
        answers = answer([p.ids for p in prompts])
        if len(answers) != len(prompts):
            raise RuntimeError(f"{len(answers)} answers for {len(prompts)} prompts")
        for i, d in enumerate(depths):
            mine = list(zip(prompts[i * trials : (i + 1) * trials], answers[i * trials : (i + 1) * trials]))
            right = [is_correct(a, p.key) for p, a in mine]
            cells.append({"context": n, "depth": d, "trials": trials, "correct": sum(right),
                          "accuracy": sum(right) / trials, "keys": [p.key for p, _ in mine],
                          "answers": [a for _, a in mine], "needle_at": [p.needle_at for p, _ in mine]})
        if progress:
            acc = sum(c["correct"] for c in cells if c["context"] == n) / (trials * len(depths))
            progress(f"context {n}: accuracy {acc:.0%}")
    total = sum(c["correct"] for c in cells)
    return {"task": "passkey", "contexts": list(contexts), "depths": list(depths), "trials": trials, "seed": seed,
            "cells": cells, "accuracy": total / (len(cells) * trials) if cells else 0.0}


def engine_answers(llm, max_new_tokens: int = NEW_TOKENS) -> Callable[[list[list[int]]], list[str]]:
    """answer() for `run_grid` through a `trillion.LLM`: greedy, `max_new_tokens`, the answers' text."""
    from ..engine.sampling import SamplingParams

    params = SamplingParams(temperature=0, max_new_tokens=max_new_tokens)

    def answer(prompts: list[list[int]]) -> list[str]:
        return [o.text for o in llm.generate(prompts, params)]

    return answer


# ---------------------------------------------------------------------------------- report


def table(result: dict) -> str:
    """Accuracy by depth (rows) and context (columns), a markdown table."""
    from ..kvcost import format_tokens

    ctx = result["contexts"]
    acc = {(c["context"], c["depth"]): c["accuracy"] for c in result["cells"]}
    lines = ["| depth | " + " | ".join(format_tokens(n) for n in ctx) + " |", "|---|" + "---|" * len(ctx)]
    for d in result["depths"]:
        lines.append(f"| {d:.0%} | " + " | ".join(f"{acc[n, d]:.0%}" for n in ctx) + " |")
    by_ctx = [sum(acc[n, d] for d in result["depths"]) / len(result["depths"]) for n in ctx]
    lines.append("| all | " + " | ".join(f"{a:.0%}" for a in by_ctx) + " |")
    return "\n".join(lines)


def heatmap(result: dict, path: str | Path, title: str = "") -> Path:
    """The accuracy grid as a PNG: context across, depth down, red (0) to green (1), values written in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..kvcost import format_tokens

    ctx, depths = result["contexts"], result["depths"]
    acc = {(c["context"], c["depth"]): c["accuracy"] for c in result["cells"]}
    grid = [[acc[n, d] for n in ctx] for d in depths]
    fig, ax = plt.subplots(figsize=(max(4.8, 1.6 + 0.9 * len(ctx)), 1.4 + 0.45 * len(depths)))
    im = ax.imshow(grid, cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto")
    for i, row in enumerate(grid):
        for j, a in enumerate(row):
            ax.text(j, i, f"{a:.0%}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(ctx)), [format_tokens(n) for n in ctx])
    ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
    ax.set_xlabel("context (tokens)")
    ax.set_ylabel("depth of the key")
    ax.set_title(title or f"passkey retrieval, {result['trials']} keys a cell", fontsize=9)
    fig.colorbar(im, ax=ax, label="accuracy")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
