"""Sample completions for training reports: a plain loop over the full forward, no cache.

This is the reference the inference engine replaces: it recomputes the whole prefix for every new
token, which is fine for a few short samples of a small model. Greedy by default; with
`temperature > 0` it samples from a seeded generator, so a report is reproducible.
"""

from __future__ import annotations

import torch
from torch import nn

from .tokenizer import BOS_ID, EOS_ID


@torch.no_grad()
def complete(
    model: nn.Module,
    tokenizer,
    prompt: str,
    max_new_tokens: int = 64,
    *,
    temperature: float = 0.0,
    top_k: int = 0,
    seed: int = 0,
    context: int | None = None,
) -> str:
    """The text the model writes after `prompt` (prompt excluded); stops at end-of-sentence.

    The prompt is preceded by BOS, as every training document is. `context`: keep only the last
    this many tokens as input (default: no limit).
    """
    was_training = model.training
    model.eval()
    ids = [BOS_ID] + tokenizer.encode(prompt, add_special_tokens=False).ids
    g = torch.Generator().manual_seed(seed)
    new: list[int] = []
    for _ in range(max_new_tokens):
        window = ids[-context:] if context else ids
        logits = model(torch.tensor([window]))[0, -1]
        if temperature > 0:
            if top_k:
                kth = logits.topk(min(top_k, logits.numel())).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = int(torch.multinomial((logits / temperature).softmax(-1), 1, generator=g))
        else:
            nxt = int(logits.argmax())
        if nxt == EOS_ID:
            break
        ids.append(nxt)
        new.append(nxt)
    model.train(was_training)
    return tokenizer.decode(new, skip_special_tokens=False)
