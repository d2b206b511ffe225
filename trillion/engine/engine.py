"""The engine: admits requests, prefills them in chunks, decodes every running sequence together.

Speaks token ids only (text, stop strings and chat formats live above it: `trillion.tokenizer`'s
`TextStream`, used by `LLM` and the server alike). Each `step()`:
1. admits waiting requests while the state pool can hold them (prompt + max_new_tokens);
2. runs one prefill chunk (at most `prefill_chunk` tokens) of the oldest sequences still
   prefilling, chunks of equal length as one batch, so long prompts never stall running streams;
3. runs one decode step for all sequences past prefill: one token each, or with
   `speculative="mtp"` a draft of `num_draft_tokens` tokens by the MTP block, checked by the main
   model in one step (standard speculative rejection sampling; greedy output is the plain greedy
   output), then the state of both stacks is cut back to what was accepted (`StatePool.truncate`);
4. returns the new tokens as events; finished sequences give back their state at once.

Every forward step goes through `ModelRunner` (runner.py): one algorithm for any number of tokens.
Samples of one request (n > 1) share the prompt's prefill: the state is forked.
"""

from __future__ import annotations

import itertools
import time
import warnings
from collections import deque
from dataclasses import dataclass, field

import torch

from ..config import ceil_div
from ..errors import UserError
from ..model import Transformer
from . import compiling
from .experts import make_dispatch
from .kvstore import check_kv_dtype
from .runner import ModelRunner
from .sampling import SamplingParams, draw, prompt_logprobs, target_distribution, token_logprobs, verify_draft
from .state import MAIN, MTP, SeqState, StatePool, pool_tokens

WAITING, PREFILL, DECODE, FINISHED = "waiting", "prefill", "decode", "finished"


@dataclass
class Sequence:
    id: int
    request_id: int
    index: int  # sample number within the request
    prompt_ids: list[int]
    params: SamplingParams
    generator: torch.Generator | None
    output_ids: list[int] = field(default_factory=list)
    logprobs: list[dict] = field(default_factory=list)
    prompt_logprobs: list[dict | None] = field(default_factory=list)  # params.prompt_logprobs: one per prompt token
    status: str = WAITING
    state: SeqState | None = None
    prefilled: int = 0
    pending: int | None = None  # sampled, not yet run through the model
    last_hidden: torch.Tensor | None = None  # main streams at the last processed position [N, D]
    finish_reason: str | None = None
    arrival: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    finished_at: float | None = None
    drafted: int = 0
    accepted: int = 0
    reserved: dict = field(default_factory=dict)  # pages held for this sequence until it ends
    followers: list[Sequence] = field(default_factory=list)  # samples that fork off this prefill

    @property
    def all_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids


@dataclass
class Event:
    """One new token of one sequence (token_id None: the sequence ended without a new token)."""

    seq: Sequence
    token_id: int | None
    finished: bool = False


def _model_len(cfg, max_model_len: int | None, allow_long_context: bool) -> int:
    """The engine's limit on prompt + new tokens: the model's position limit unless told otherwise;
    past it only on request, with a warning (the model never saw positions that far)."""
    if max_model_len is None or max_model_len <= cfg.max_seq_len:
        return max_model_len or cfg.max_seq_len
    if not allow_long_context:
        raise UserError(
            f"max_model_len = {max_model_len} exceeds the model's position limit {cfg.max_seq_len} "
            "(max_position_embeddings); pass allow_long_context=True (--allow-long-context) to run past it"
        )
    warnings.warn(
        f"max_model_len = {max_model_len} is past the model's position limit {cfg.max_seq_len}: it was not "
        "trained on sequences that long, and what it makes of them is untested", stacklevel=3)
    return max_model_len


def _positive(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{name} = {value!r}: expected an integer >= {minimum}")


class Engine:
    """options: max_seqs (sequences decoded together), max_model_len (prompt + new tokens; default
    the model's position limit, beyond it only with allow_long_context=True), prefill_chunk (prompt
    tokens per step), page_size (entries per state page), kv_cache_tokens (tokens of compressed
    state the pool holds, all sequences together; default: max_seqs x max_model_len, or what 80% of
    the available memory holds), kv_dtype (how the state is stored: "auto" = the model's dtype,
    "bf16", "float32", or "fp8" = the release's FP8 KV / FP4 indexer keys), speculative ("mtp"),
    num_draft_tokens, compile (None, the default: eager, or "auto" when TRILLION_COMPILE=auto; "auto":
    the decode and speculative steps compile in a background thread, cached on disk, while they run
    eagerly; True: compile the steps and prefill stages now, on first use; False: eager; see
    trillion.engine.compiling), experts (the
    routed-expert strategy: "grouped", "graph" or an object, see trillion.engine.experts; default
    "graph" when compiling, else "grouped")."""

    def __init__(
        self,
        model: Transformer,
        *,
        max_seqs: int = 8,
        max_model_len: int | None = None,
        prefill_chunk: int = 512,
        page_size: int = 64,
        kv_cache_tokens: int | None = None,
        kv_dtype: str = "auto",
        allow_long_context: bool = False,
        speculative: str | None = None,
        num_draft_tokens: int = 1,
        compile: bool | str | None = None,
        experts=None,
    ):
        cfg = model.cfg
        compile = compiling.resolve_mode(compile)
        for name, value in (("max_seqs", max_seqs), ("prefill_chunk", prefill_chunk), ("page_size", page_size),
                            ("num_draft_tokens", num_draft_tokens)):
            _positive(name, value)
        for name, value in (("max_model_len", max_model_len), ("kv_cache_tokens", kv_cache_tokens)):
            if value is not None:
                _positive(name, value)
        if speculative not in (None, "mtp"):
            raise UserError(f"speculative = {speculative!r}; the only method is 'mtp'")
        if speculative and not cfg.n_mtp_layers:
            raise UserError("speculative='mtp' needs a model with an MTP block (n_mtp_layers >= 1)")
        if speculative and compile is True:
            warnings.warn(
                "speculative='mtp' with compile=True: drafts and checks run as compiled graphs too, but each "
                "new draft length compiles its own graphs on first use",
                stacklevel=2,
            )
        check_kv_dtype(kv_dtype)
        self.model, self.cfg = model, cfg
        self.max_model_len = _model_len(cfg, max_model_len, allow_long_context)
        self.prefill_chunk, self.speculative, self.k = prefill_chunk, speculative, num_draft_tokens
        if kv_dtype == "fp8" and not cfg.fake_quant:
            warnings.warn(
                "kv_dtype='fp8' stores the state as DeepSeek's release does (FP8 KV, FP4 indexer keys), but this "
                "model does not round its activations so (cfg.fake_quant is off): its outputs will differ from "
                "the unrounded model's", stacklevel=2)
        if kv_cache_tokens:
            tokens, sizing = kv_cache_tokens, f"kv_cache_tokens = {kv_cache_tokens}"
        else:
            tokens, sizing = pool_tokens(cfg, max_seqs=max_seqs, max_model_len=self.max_model_len, kv_dtype=kv_dtype,
                                         dtype=model.dtype, page_size=page_size)
        ratios = {cfg.ratio(i) for i in range(cfg.n_layers + cfg.n_mtp_layers)} - {0}
        pool_options = {
            "max_seqs": max_seqs, "max_entries": {r: ceil_div(tokens, r) for r in ratios}, "page_size": page_size,
            "spec_slack": num_draft_tokens + 1 if speculative else 0, "dtype": model.dtype,
            "device": model.embed.weight.device, "kv_dtype": kv_dtype, "sizing": sizing,
        }
        self.pool = StatePool(cfg, **pool_options)
        if compile:
            compiling.use_cache_dir()
            missing = compiling.missing_compiler()
            if missing:
                warnings.warn(f"no C++ compiler for torch.compile ({missing}): running eagerly", stacklevel=2)
                compile = False
        # the routed-expert strategy; "graph" stacks the experts' weights (a visible step on the model)
        self.experts = make_dispatch(experts or ("graph" if compile else "grouped"), model)
        self.runner = ModelRunner(model, self.pool, max_model_len=self.max_model_len, compile=compile,
                                  experts=self.experts, scratch=lambda: StatePool(cfg, **pool_options))
        self.runner.precompile(num_draft_tokens if speculative else 0)
        self.waiting: deque[list[Sequence]] = deque()
        self.running: list[Sequence] = []
        self._ids = itertools.count()
        self._req_ids = itertools.count()
        self.eos = cfg.eos_token_id

    @property
    def reserved(self) -> dict:
        """Pages promised to running sequences, per (stack, ratio) group."""
        return self.pool.reserved

    # ------------------------------------------------------------------ requests

    def add_request(self, prompt_ids: list[int], params: SamplingParams | None = None) -> list[Sequence]:
        params = params or SamplingParams()
        self.check_request(prompt_ids, params)
        rid = next(self._req_ids)
        seqs = []
        for i in range(params.n):
            gen = None
            if not params.greedy:
                gen = torch.Generator().manual_seed(
                    params.seed + i if params.seed is not None else int(torch.randint(0, 2**62, (1,)))
                )
            seqs.append(Sequence(next(self._ids), rid, i, list(prompt_ids), params, gen))
        self.waiting.append(seqs)
        return seqs

    def check_request(self, prompt_ids: list[int], params: SamplingParams) -> None:
        """Refuse (UserError, with the reason) a request this engine could never run."""
        if not prompt_ids:
            raise UserError("the prompt is empty: give at least one token")
        bad = [t for t in prompt_ids if not 0 <= t < self.cfg.vocab_size]
        if bad:
            raise UserError(f"prompt token ids out of range [0, {self.cfg.vocab_size}): {bad[:5]}")
        total = len(prompt_ids) + params.max_new_tokens
        if total > self.max_model_len:
            raise UserError(
                f"prompt ({len(prompt_ids)} tokens) + max_new_tokens ({params.max_new_tokens}) = {total} exceeds "
                f"the maximum model length {self.max_model_len}"
            )
        if params.n > self.pool.max_seqs:
            raise UserError(f"n = {params.n} samples exceeds max_seqs = {self.pool.max_seqs}")
        self.pool.check_fits(self._need(len(prompt_ids), params), params.n)

    def abort(self, seqs: list[Sequence], reason: str = "abort") -> None:
        """End sequences now (a client went away: "abort"; a stop string matched above: "stop");
        their state returns to the pool at once."""
        for group in list(self.waiting):
            if any(s in seqs for s in group):
                self.waiting.remove(group)
        for s in seqs:
            if s.status != FINISHED:
                self._finish(s, reason)

    def stop(self, s: Sequence, keep: int) -> None:
        """End `s` on a stop string found above the engine, in its text: keep its first `keep`
        output tokens (the one that completed the stop string is the last)."""
        del s.output_ids[keep:]
        del s.logprobs[keep:]
        if s.status != FINISHED:
            self._finish(s, "stop")
        s.finish_reason = "stop"

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def tick(self) -> None:
        """Called by an owner with nothing to step (the server's idle loop). Nothing to do here; a
        distributed engine (trillion.parallel.engine) keeps its follower ranks in touch."""

    # ------------------------------------------------------------------ one step

    @torch.no_grad()
    def step(self) -> list[Event]:
        events: list[Event] = []
        self._admit()
        # prefill: up to `prefill_chunk` prompt tokens per step, oldest sequences first
        budget = self.prefill_chunk
        chunks: dict[int, list[Sequence]] = {}
        for pre in [s for s in self.running if s.status == PREFILL]:
            if budget <= 0:
                break
            n = min(budget, len(pre.prompt_ids) - pre.prefilled)
            chunks.setdefault(n, []).append(pre)
            budget -= n
        for n, group in chunks.items():  # chunks of equal length run as one batch
            events += self._prefill(group, n)
        dec = [s for s in self.running if s.status == DECODE and s.pending is not None]
        if dec:
            events += self._speculate(dec) if self.speculative else self._decode(dec)
        self.running = [s for s in self.running if s.status != FINISHED]
        return events

    def _need(self, prompt_tokens: int, params: SamplingParams) -> int:
        """Tokens of state a sequence may reach (a speculative step runs past the end and is cut)."""
        return prompt_tokens + params.max_new_tokens + (self.k + 1 if self.speculative else 0)

    def _admit(self) -> None:
        while self.waiting:
            group = self.waiting[0]
            tokens = self._need(len(group[0].prompt_ids), group[0].params)
            if not self.pool.can_admit(tokens, len(group)):
                return
            self.waiting.popleft()
            for q in group:
                q.reserved = self.pool.reserve(tokens)
            leader = group[0]
            leader.state = self.pool.allocate()
            leader.status = PREFILL
            leader.followers = group[1:]
            self.running.append(leader)

    # ------------------------------------------------------------------ prefill

    def _prefill(self, seqs: list[Sequence], n: int) -> list[Event]:
        """Run the next `n` prompt tokens of each of `seqs` (one batch); a sequence whose prompt
        this completes samples its first token(s)."""
        starts = [s.prefilled for s in seqs]
        ids = torch.tensor([s.prompt_ids[a : a + n] for s, a in zip(seqs, starts)], dtype=torch.long)
        scoring = [s.params.prompt_logprobs is not None for s in seqs]  # they need every position's logits
        logits, h = self.runner.forward(ids, [s.state for s in seqs], last_only=not any(scoring))
        events = []
        for b, (s, a) in enumerate(zip(seqs, starts)):
            if scoring[b]:
                s.prompt_logprobs += prompt_logprobs(logits[b], s.prompt_ids, a, s.params.prompt_logprobs)
            if self.speculative:
                self._mtp_catch_up(s, h[b], s.prompt_ids[a : a + n], first=a == 0)
            s.last_hidden = h[b, -1]
            s.prefilled = a + n
            if s.prefilled < len(s.prompt_ids):
                continue
            group = [s] + [f for f in s.followers if f.status != FINISHED]
            for f in group[1:]:
                f.state = self.pool.fork(s.state)
                f.last_hidden = s.last_hidden
                f.prefilled = s.prefilled
                f.prompt_logprobs = s.prompt_logprobs
                self.running.append(f)
            for q in group:
                q.status = DECODE
                if q.params.max_new_tokens == 0:  # the prompt only (its state, its log-probabilities)
                    self._finish(q, "length")
                    events.append(Event(q, None, finished=True))
                else:
                    events.append(self._emit(q, logits[b, -1]))
        return events

    def _mtp_catch_up(self, s: Sequence, h: torch.Tensor, tokens: list[int], first: bool) -> None:
        """Keep the MTP stack one position behind the main one: pair h_t with token t + 1."""
        if first:
            hid, nxt = h[:-1], tokens[1:]
        else:
            hid, nxt = torch.cat((s.last_hidden[None], h[:-1])), tokens
        if nxt:
            self.runner.mtp(hid[None], torch.tensor([nxt], dtype=torch.long), [s.state])

    # ------------------------------------------------------------------ decode

    def _decode(self, seqs: list[Sequence]) -> list[Event]:
        ids = torch.tensor([[s.pending] for s in seqs], dtype=torch.long)
        logits, _ = self.runner.forward(ids, [s.state for s in seqs])
        for s in seqs:
            s.pending = None
        return [self._emit(s, logits[b, 0]) for b, s in enumerate(seqs)]

    def _draft(self, seqs: list[Sequence]) -> tuple[torch.Tensor, list[list[torch.Tensor]]]:
        """Draft k tokens per sequence with the MTP block, chained on its own output streams.

        Returns drafts [B, k] and the distributions they were drawn from. The MTP stack is left
        k - 1 positions past its true length (the drafts past the first are guesses); the caller
        cuts it back."""
        states = [s.state for s in seqs]
        hid = torch.stack([s.last_hidden for s in seqs])[:, None]  # [B, 1, N, D]
        nxt = torch.tensor([[s.pending] for s in seqs], dtype=torch.long)
        drafts = torch.zeros(len(seqs), self.k, dtype=torch.long)
        dists: list[list[torch.Tensor]] = [[] for _ in seqs]
        for i in range(self.k):
            q_logits, hid = self.runner.mtp(hid, nxt, states)
            for b, s in enumerate(seqs):
                q = target_distribution(q_logits[b, 0], s.params, s.prompt_ids, s.output_ids + drafts[b, :i].tolist())
                dists[b].append(q)
                drafts[b, i] = int(q.argmax()) if s.params.greedy else draw(q, s.generator)
            nxt = drafts[:, i : i + 1]
        return drafts, dists

    def _speculate(self, seqs: list[Sequence]) -> list[Event]:
        states = [s.state for s in seqs]
        k = self.k
        mtp_len = [s.lengths[MTP] + 1 for s in states]  # the first draft position is a true one
        main_len = [s.lengths[MAIN] for s in states]
        drafts, q_dists = self._draft(seqs)
        # check [pending, d1..dk] with the main model in one step
        ids = torch.cat((torch.tensor([[s.pending] for s in seqs], dtype=torch.long), drafts), dim=1)
        p_logits, h = self.runner.forward(ids, states)
        events, keep = [], []
        for b, s in enumerate(seqs):
            s.pending = None
            n_acc = 0
            for i in range(k):
                p = target_distribution(p_logits[b, i], s.params, s.prompt_ids, s.output_ids)
                s.drafted += 1
                ok, tok = verify_draft(p, q_dists[b][i], int(drafts[b, i]), s.generator, s.params.greedy)
                events.append(self._emit(s, p_logits[b, i], token=tok))
                if not ok:
                    break
                s.accepted += 1
                n_acc += 1
                if s.status == FINISHED:
                    break
            else:
                events.append(self._emit(s, p_logits[b, k]))  # every draft accepted: a bonus token
            keep.append(n_acc)
            if s.status != FINISHED:
                s.last_hidden = h[b, n_acc]
        # cut both stacks back to what was accepted; redo the MTP positions with the true streams
        for b, s in enumerate(seqs):
            if s.status == FINISHED:
                continue
            self.pool.truncate(states[b], MAIN, main_len[b] + 1 + keep[b])
            self.pool.truncate(states[b], MTP, mtp_len[b])
            if keep[b]:
                self.runner.mtp(h[b : b + 1, : keep[b]], drafts[b : b + 1, : keep[b]], [states[b]])
        return events

    # ------------------------------------------------------------------ tokens out

    def _emit(self, s: Sequence, logits: torch.Tensor, token: int | None = None) -> Event:
        """Choose (or take) the next token of `s`, record it, check the token-level stops."""
        if s.status == FINISHED:
            return Event(s, None, finished=True)
        if token is None:
            probs = target_distribution(logits, s.params, s.prompt_ids, s.output_ids)
            token = int(probs.argmax()) if s.params.greedy else draw(probs, s.generator)
        if s.first_token_at is None:
            s.first_token_at = time.perf_counter()
        s.output_ids.append(token)
        if s.params.logprobs is not None:
            s.logprobs.append(token_logprobs(logits, token, s.params.logprobs))
        reason = None
        if (token == self.eos and not s.params.ignore_eos) or token in s.params.stop_token_ids:
            reason = "stop"
        elif len(s.output_ids) >= s.params.max_new_tokens:
            reason = "length"
        if reason:
            self._finish(s, reason)
        else:
            s.pending = token
        return Event(s, token, finished=reason is not None)

    def _finish(self, s: Sequence, reason: str) -> None:
        s.status, s.finish_reason, s.pending = FINISHED, reason, None
        s.finished_at = time.perf_counter()
        if s.state is not None and s.state.slot >= 0:
            self.pool.release(s.state)
        self.pool.unreserve(s.reserved)
        s.reserved = {}
        if s.state is not None and s.prefilled < len(s.prompt_ids):
            for f in s.followers:  # the shared prefill was cancelled: its samples end too
                if f.status != FINISHED:
                    self._finish(f, reason)
