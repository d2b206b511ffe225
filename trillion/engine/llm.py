"""The Python API: `trillion.LLM(model_or_path_or_flavor).generate(prompts, params)` and `.stream`.

Prompts are token-id lists, or text when the model has a tokenizer. Outputs carry the token ids,
text, finish reason, log-probabilities when asked, and timing / speculation statistics. The engine
speaks token ids; the text and the stop strings of each output come from one `TextStream`
(`trillion.tokenizer`), the same as the server's.
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
from ..tokenizer import TextStream, Tokenizer
from .engine import Engine, Event, Sequence
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
    prompt_logprobs: list[dict | None] | None = None  # SamplingParams.prompt_logprobs: one per prompt token

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
    """What one completion gained: a new token and the text it released (token_id None: the end,
    with text that was held back until then)."""

    index: int
    token_id: int | None
    text: str
    finish_reason: str | None = None


@dataclass
class _Text:
    """One running output's text: its stream, what it has released, tokens it has read."""

    stream: TextStream
    text: str = ""
    read: int = 0


class LLM:
    """Load (or take) a model and generate from it; with no model, the demo model shipped in the package.

    engine options (trillion.engine.Engine): max_seqs, max_model_len, prefill_chunk, page_size,
    kv_cache_tokens, speculative ("mtp" or None), num_draft_tokens, compile, experts; or `engine=` an
    engine built already (its model is used), as `trillion.parallel.DistributedEngine` on rank 0.
    """

    def __init__(
        self,
        model: Transformer | str | Path = DEFAULT_MODEL,
        *,
        tokenizer: Tokenizer | str | Path | None = None,
        dtype: torch.dtype | None = None,
        seed: int = 0,
        engine=None,
        **engine_options,
    ):
        if engine is not None:  # a prebuilt engine (trillion.parallel.DistributedEngine on rank 0)
            if engine_options:
                raise UserError(f"engine options {sorted(engine_options)} go to the engine given, not to LLM")
            model = engine.model
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
        self.engine = engine if engine is not None else Engine(self.model, **engine_options)
        self._texts: dict[int, _Text] = {}  # sequence id -> its text, while its request runs

    def encode(self, prompt: str | list[int]) -> list[int]:
        """The token ids the engine is given for `prompt` (text through the tokenizer; ids checked as ints)."""
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise UserError("text prompts need a tokenizer; give token ids or load a model with tokenizer.json")
            return self.tokenizer.encode_prompt(prompt, bos_token_id=self.model.cfg.bos_token_id)  # BOS first
        return [int(t) for t in prompt]

    def _add(self, ids: list[int], params: SamplingParams) -> list[Sequence]:
        seqs = self.engine.add_request(ids, params)
        hidden = {self.model.cfg.eos_token_id, self.model.cfg.bos_token_id, *params.stop_token_ids}
        for s in seqs:
            self._texts[s.id] = _Text(TextStream(self.tokenizer, hidden=hidden, stop=params.stop))
        return seqs

    def _read(self, ev: Event) -> tuple[str, bool]:
        """(the text one engine event adds to its output, whether the output ended). A stop string
        ends the output there: the engine keeps the tokens up to the one that completed it."""
        out = self._texts.get(ev.seq.id)
        if out is None or out.stream.stopped:
            return "", True
        text = ""
        if ev.token_id is not None:
            out.read += 1
            text = out.stream.push(ev.token_id)
        if ev.finished or out.stream.stopped:
            text += out.stream.finish()
        if out.stream.stopped:
            self.engine.stop(ev.seq, keep=out.read)
        out.text += text
        return text, ev.finished or out.stream.stopped

    def _output(self, prompt, ids: list[int], seqs: list[Sequence], started: float) -> Output:
        comps = [
            Completion(s.index, list(s.output_ids), self._texts.pop(s.id).text, s.finish_reason,
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
        plp = list(seqs[0].prompt_logprobs) if seqs[0].params.prompt_logprobs is not None else None
        return Output(prompt if isinstance(prompt, str) else None, ids, comps, stats, plp)

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
        try:
            for prompt, p in zip(prompts, plist):
                ids = self.encode(prompt)
                jobs.append((prompt, ids, self._add(ids, p)))
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=len(jobs), desc="generate", unit="prompt")
            done = 0
            while self.engine.has_work():
                for ev in self.engine.step():
                    self._read(ev)
                if bar is not None:
                    now = sum(all(s.finish_reason for s in seqs) for _, _, seqs in jobs)
                    bar.update(now - done)
                    done = now
            if bar is not None:
                bar.close()
        except BaseException:  # an error or Ctrl-C: nothing of these prompts stays in the engine
            self._drop([s for _, _, seqs in jobs for s in seqs])
            raise
        return [self._output(prompt, ids, seqs, started) for prompt, ids, seqs in jobs]

    def stream(
        self, prompt: str | list[int], sampling_params: SamplingParams | None = None
    ) -> Iterator[StreamChunk]:
        """Yield tokens of one prompt as they come (all n completions interleaved)."""
        ids = self.encode(prompt)
        seqs = self._add(ids, sampling_params or SamplingParams())
        mine = {s.id for s in seqs}
        try:
            while any(s.finish_reason is None for s in seqs):
                for ev in self.engine.step():
                    text, ended = self._read(ev)
                    if ev.seq.id in mine and (ev.token_id is not None or text):
                        yield StreamChunk(ev.seq.index, ev.token_id, text, ev.seq.finish_reason if ended else None)
        finally:
            self._drop(seqs)

    def _drop(self, seqs: list[Sequence]) -> None:
        """End what still runs of these sequences and forget their text."""
        self.engine.abort([s for s in seqs if s.finish_reason is None])
        for s in seqs:
            self._texts.pop(s.id, None)
