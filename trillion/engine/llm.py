"""The Python API: `trillion.LLM(model_or_path_or_flavor).generate(prompts, params)` and `.stream`.

Prompts are token-id lists, or text when the model has a tokenizer. Outputs carry the token ids,
text, finish reason, log-probabilities when asked, and timing / speculation statistics.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..assets import DEFAULT_MODEL, shipped_model
from ..errors import UserError
from ..model import Transformer
from ..tokenizer import Tokenizer
from .engine import Engine, Sequence
from .sampling import SamplingParams


@dataclass
class Completion:
    index: int
    token_ids: list[int]
    text: str
    finish_reason: str | None
    logprobs: list[dict] | None = None


@dataclass
class Output:
    """One prompt's result: `outputs` has n completions; the properties read the first."""

    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[Completion]
    stats: dict = field(default_factory=dict)

    @property
    def token_ids(self) -> list[int]:
        return self.outputs[0].token_ids

    @property
    def text(self) -> str:
        return self.outputs[0].text

    @property
    def finish_reason(self) -> str | None:
        return self.outputs[0].finish_reason

    @property
    def logprobs(self) -> list[dict] | None:
        return self.outputs[0].logprobs


@dataclass
class StreamChunk:
    """One new token of one completion, as it comes."""

    index: int
    token_id: int
    text: str
    finish_reason: str | None = None


class LLM:
    """Load (or take) a model and generate from it; with no model, the demo model shipped in the package.

    engine options: max_seqs, max_model_len, prefill_chunk, page_size, kv_cache_tokens,
    speculative ("mtp" or None), num_draft_tokens.
    """

    def __init__(
        self,
        model: Transformer | str | Path = DEFAULT_MODEL,
        *,
        tokenizer: Tokenizer | str | Path | None = None,
        dtype: torch.dtype | None = None,
        seed: int = 0,
        **engine_options,
    ):
        if isinstance(model, Transformer):
            self.model = model.eval()
        else:
            from ..checkpoint import load_model

            model = shipped_model(model) or model  # `demo`: its folder, which holds the tokenizer too
            self.model = load_model(model, dtype=dtype, seed=seed)
            if tokenizer is None and Path(str(model)).is_dir():
                tokenizer = Tokenizer.find(model)
        if isinstance(tokenizer, (str, Path)):
            tokenizer = Tokenizer.from_file(tokenizer)
        self.tokenizer: Tokenizer | None = tokenizer
        self.engine = Engine(self.model, self.tokenizer, **engine_options)

    def encode(self, prompt: str | list[int]) -> list[int]:
        """The token ids the engine is given for `prompt` (text through the tokenizer; ids checked as ints)."""
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise UserError("text prompts need a tokenizer; give token ids or load a model with tokenizer.json")
            return self.tokenizer.encode(prompt)
        return [int(t) for t in prompt]

    # ------------------------------------------------------------------ helpers

    def _output(self, prompt, ids: list[int], seqs: list[Sequence], started: float) -> Output:
        comps = [
            Completion(s.index, list(s.output_ids), s.text, s.finish_reason,
                       list(s.logprobs) if s.params.logprobs is not None else None)
            for s in seqs
        ]
        first = min((s.first_token_at for s in seqs if s.first_token_at), default=None)
        end = max((s.finished_at for s in seqs if s.finished_at), default=time.perf_counter())
        n_out = sum(len(s.output_ids) for s in seqs)
        drafted, accepted = sum(s.drafted for s in seqs), sum(s.accepted for s in seqs)
        stats = {
            "prompt_tokens": len(ids),
            "completion_tokens": n_out,
            "time_to_first_token_s": (first - started) if first else None,
            "total_time_s": end - started,
            "decode_tokens_per_s": (n_out - len(seqs)) / (end - first) if first and end > first and n_out > len(seqs) else None,
        }
        if drafted:
            stats.update(draft_tokens=drafted, accepted_tokens=accepted, acceptance_rate=accepted / drafted)
        return Output(prompt if isinstance(prompt, str) else None, ids, comps, stats)

    # ------------------------------------------------------------------ API

    def generate(
        self,
        prompts: str | list[int] | Seq[str | list[int]],
        sampling_params: SamplingParams | Seq[SamplingParams] | None = None,
        *,
        progress: bool = False,
    ) -> list[Output]:
        """Run every prompt to completion (all batched together); one Output per prompt, in order."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]  # type: ignore[list-item]
        params = sampling_params or SamplingParams()
        plist = list(params) if isinstance(params, (list, tuple)) else [params] * len(prompts)
        if len(plist) != len(prompts):
            raise UserError(f"{len(plist)} sampling params for {len(prompts)} prompts")
        started = time.perf_counter()
        jobs = []
        for prompt, p in zip(prompts, plist):
            ids = self.encode(prompt)
            jobs.append((prompt, ids, self.engine.add_request(ids, p)))
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(jobs), desc="generate", unit="prompt")
        done = 0
        while self.engine.has_work():
            self.engine.step()
            if bar is not None:
                now = sum(all(s.finish_reason for s in seqs) for _, _, seqs in jobs)
                bar.update(now - done)
                done = now
        if bar is not None:
            bar.close()
        return [self._output(prompt, ids, seqs, started) for prompt, ids, seqs in jobs]

    def stream(
        self, prompt: str | list[int], sampling_params: SamplingParams | None = None
    ) -> Iterator[StreamChunk]:
        """Yield tokens of one prompt as they come (all n completions interleaved)."""
        ids = self.encode(prompt)
        seqs = self.engine.add_request(ids, sampling_params or SamplingParams())
        mine = {id(s) for s in seqs}
        try:
            while any(s.finish_reason is None for s in seqs):
                for ev in self.engine.step():
                    if id(ev.seq) in mine and ev.token_id is not None:
                        yield StreamChunk(ev.seq.index, ev.token_id, ev.text,
                                          ev.seq.finish_reason if ev.finished else None)
        finally:
            self.engine.abort([s for s in seqs if s.finish_reason is None])
