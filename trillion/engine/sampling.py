"""Sampling parameters and the logits processing that turns a model's logits into a choice.

Order of operations (the order vLLM and transformers use):
1. penalties on the raw logits: repetition (divide positive logits by the penalty, multiply
   negative ones, for every token seen in the prompt or the output), then presence and frequency
   (OpenAI's definition: subtract `presence` once and `frequency` per occurrence, output tokens);
2. temperature (0 = greedy: the argmax of the penalised logits);
3. top-k, then top-p (the smallest set whose probability reaches p, always keeping the best),
   then min-p (drop tokens below min_p times the best token's probability);
4. one draw from the remaining distribution with the sequence's own generator, so a seed makes
   sampling reproducible whatever else is in the batch.

Log-probabilities reported to the user are those of the model (log-softmax of the raw logits).
"""

from __future__ import annotations

from dataclasses import InitVar, dataclass, field

import torch

from ..errors import UserError

NEG_INF = float("-inf")
DEFAULT_MAX_NEW_TOKENS = 64


@dataclass
class SamplingParams:
    """How to choose tokens for one request. `max_tokens=` (vLLM's and OpenAI's name) may be given
    instead of `max_new_tokens=`; both given must agree; the limit (default 64) is then read as
    `max_new_tokens`."""

    n: int = 1
    max_new_tokens: int | None = None  # None: DEFAULT_MAX_NEW_TOKENS
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop_token_ids: list[int] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: int | None = None  # None: none; 0: the chosen token's; n: also the top-n alternatives
    prompt_logprobs: int | None = None  # the same for each prompt token given its prefix (the first: None)
    max_tokens: InitVar[int | None] = None

    def __post_init__(self, max_tokens: int | None) -> None:
        if max_tokens is not None:
            if self.max_new_tokens is not None and self.max_new_tokens != max_tokens:
                raise UserError(
                    f"SamplingParams: max_tokens = {max_tokens} and max_new_tokens = {self.max_new_tokens} "
                    "name the same limit; give one"
                )
            self.max_new_tokens = max_tokens
        if self.max_new_tokens is None:
            self.max_new_tokens = DEFAULT_MAX_NEW_TOKENS
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        checks = [
            (self.n >= 1, "n", "must be >= 1"),
            (self.max_new_tokens >= 0, "max_new_tokens", "must be >= 0"),
            (self.temperature >= 0, "temperature", "must be >= 0"),
            (self.top_k >= 0, "top_k", "must be >= 0 (0 = off)"),
            (0 < self.top_p <= 1, "top_p", "must be in (0, 1]"),
            (0 <= self.min_p <= 1, "min_p", "must be in [0, 1]"),
            (self.repetition_penalty > 0, "repetition_penalty", "must be > 0"),
            (-2 <= self.presence_penalty <= 2, "presence_penalty", "must be in [-2, 2]"),
            (-2 <= self.frequency_penalty <= 2, "frequency_penalty", "must be in [-2, 2]"),
            (self.logprobs is None or 0 <= self.logprobs <= 20, "logprobs", "must be in [0, 20]"),
            (self.prompt_logprobs is None or 0 <= self.prompt_logprobs <= 20, "prompt_logprobs", "must be in [0, 20]"),
            (all(isinstance(s, str) and s for s in self.stop), "stop", "must be non-empty strings"),
        ]
        for ok, name, why in checks:
            if not ok:
                raise UserError(f"SamplingParams.{name} = {getattr(self, name)!r} {why}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0



def apply_penalties(
    logits: torch.Tensor, params: SamplingParams, prompt_ids: list[int], output_ids: list[int]
) -> torch.Tensor:
    """Penalised copy of one row of logits [V]."""
    if params.repetition_penalty != 1.0 and (prompt_ids or output_ids):
        seen = torch.tensor(sorted(set(prompt_ids) | set(output_ids)), dtype=torch.long)
        vals = logits[seen]
        logits = logits.clone()
        logits[seen] = torch.where(vals > 0, vals / params.repetition_penalty, vals * params.repetition_penalty)
    if (params.presence_penalty or params.frequency_penalty) and output_ids:
        ids, counts = torch.tensor(output_ids, dtype=torch.long).unique(return_counts=True)
        logits = logits.clone()
        logits[ids] -= params.presence_penalty + params.frequency_penalty * counts.to(logits.dtype)
    return logits


def filter_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature, top-k, top-p, min-p: penalised logits [V] -> probabilities [V] (float32)."""
    logits = logits.float() / params.temperature
    if params.top_k and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, NEG_INF)
    probs = logits.softmax(-1)
    if params.top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        before = sorted_p.cumsum(-1) - sorted_p  # mass strictly before each token
        drop = before >= params.top_p
        drop[0] = False
        probs = probs.clone()
        probs[order[drop]] = 0.0
    if params.min_p > 0:
        probs = probs.masked_fill(probs < params.min_p * probs.max(), 0.0)
    return probs / probs.sum()


def target_distribution(
    logits: torch.Tensor, params: SamplingParams, prompt_ids: list[int], output_ids: list[int]
) -> torch.Tensor:
    """The distribution a token is drawn from: one-hot for greedy, else filtered probabilities."""
    logits = apply_penalties(logits.float(), params, prompt_ids, output_ids)
    if params.greedy:
        out = torch.zeros_like(logits)
        out[int(torch.argmax(logits))] = 1.0
        return out
    return filter_probs(logits, params)


def draw(probs: torch.Tensor, generator: torch.Generator | None) -> int:
    return int(torch.multinomial(probs, 1, generator=generator))


def token_logprobs(logits: torch.Tensor, token: int, top_n: int) -> dict:
    """{"token": id, "logprob": float, "top": [(id, logprob), ...]} from raw logits [V]."""
    lp = logits.float().log_softmax(-1)
    out = {"token": token, "logprob": float(lp[token]), "top": []}
    if top_n:
        vals, ids = lp.topk(top_n)
        out["top"] = [(int(i), float(v)) for i, v in zip(ids, vals)]
    return out


def prompt_logprobs(logits: torch.Tensor, prompt_ids: list[int], start: int, top_n: int) -> list[dict | None]:
    """Log-probabilities of prompt tokens given their prefix, from one prefill chunk's raw logits.

    logits [T, V] are those of positions start .. start + T - 1, so row i scores prompt token
    start + i + 1 (the last row of a chunk scores the next chunk's first token). The first prompt
    token has no prefix: None, as in OpenAI's echo. Each entry is token_logprobs' dict plus the
    token's rank (1: the most likely).
    """
    targets = prompt_ids[start + 1 : start + 1 + logits.shape[0]]
    out: list[dict | None] = [None] if start == 0 else []
    if not targets:
        return out
    lp = logits[: len(targets)].float().log_softmax(-1)  # [t, V]
    ids = torch.tensor(targets, dtype=torch.long, device=lp.device)
    chosen = lp.gather(-1, ids[:, None])[:, 0]  # [t]
    ranks = (lp > chosen[:, None]).sum(-1) + 1  # [t]
    top_vals, top_ids = lp.topk(top_n, dim=-1) if top_n else (None, None)
    for i, token in enumerate(targets):
        top = list(zip(top_ids[i].tolist(), top_vals[i].tolist())) if top_n else []
        out.append({"token": token, "logprob": float(chosen[i]), "rank": int(ranks[i]), "top": top})
    return out


def verify_draft(
    p: torch.Tensor, q: torch.Tensor, draft: int, generator: torch.Generator | None, greedy: bool
) -> tuple[bool, int]:
    """Speculative rejection sampling for one drafted token (Leviathan et al. 2023; Chen et al. 2023).

    p: the target distribution at this position, q: the draft distribution the token came from.
    Accept with probability min(1, p[d] / q[d]); on rejection draw from normalise(max(p - q, 0)).
    The emitted token is then distributed exactly as p. Greedy: accept iff d is p's argmax.
    Returns (accepted, token).
    """
    if greedy:
        best = int(p.argmax())
        return best == draft, best
    u = float(torch.rand((), generator=generator))
    if u * float(q[draft]) <= float(p[draft]):
        return True, draft
    resid = (p - q).clamp(min=0)
    total = float(resid.sum())
    return False, draw(resid / total, generator) if total > 0 else draw(p, generator)
