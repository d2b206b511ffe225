"""The engine: admits requests, prefills them in chunks, decodes every running sequence together.

Speaks token ids. Each `step()`:
1. admits waiting requests while the state pool can hold them (prompt + max_new_tokens);
2. runs one prefill chunk (at most `prefill_chunk` tokens) of the oldest sequence still
   prefilling, so long prompts never stall running streams for long;
3. runs one decode step for all sequences past prefill: one token each, or with
   `speculative="mtp"` a draft of `num_draft_tokens` tokens by the MTP block, verified by the main
   model in one forward pass (standard speculative rejection sampling; greedy output is the plain
   greedy output);
4. returns the new tokens as events; finished sequences give back their state at once.

Samples of one request (n > 1) share the prompt's prefill: the state is forked.
"""

from __future__ import annotations

import itertools
import time
import warnings
from collections import deque
from dataclasses import dataclass, field

import torch

from ..model import Transformer
from ..tokenizer import IncrementalDecoder, Tokenizer
from .decode import Decoder
from .runner import ModelRunner
from .sampling import SamplingParams, draw, prompt_logprobs, target_distribution, token_logprobs, verify_draft
from .state import MAIN, MTP, SeqState, StatePool

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
    decoder: IncrementalDecoder | None = None
    text: str = ""
    emitted: int = 0  # characters of `text` already handed out in events
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
    text: str = ""
    finished: bool = False


class Engine:
    def __init__(
        self,
        model: Transformer,
        tokenizer: Tokenizer | None = None,
        *,
        max_seqs: int = 8,
        max_model_len: int | None = None,
        prefill_chunk: int = 512,
        page_size: int = 64,
        kv_cache_tokens: int | None = None,
        speculative: str | None = None,
        num_draft_tokens: int = 1,
        compile: bool = False,
    ):
        cfg = model.cfg
        if speculative not in (None, "mtp"):
            raise ValueError(f"speculative = {speculative!r}; the only method is 'mtp'")
        if speculative and not cfg.n_mtp_layers:
            raise ValueError("speculative='mtp' needs a model with an MTP block (n_mtp_layers >= 1)")
        if num_draft_tokens < 1:
            raise ValueError(f"num_draft_tokens = {num_draft_tokens} must be >= 1")
        if speculative and compile:
            warnings.warn(
                "speculative='mtp' with compile=True decodes slower than compile=True alone: plain decode "
                "steps are one compiled graph, speculative verification is not yet (docs/performance.md)",
                stacklevel=2,
            )
        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg
        self.max_model_len = min(max_model_len or cfg.max_seq_len, cfg.max_seq_len)
        self.prefill_chunk, self.speculative, self.k = prefill_chunk, speculative, num_draft_tokens
        tokens = kv_cache_tokens or max_seqs * min(self.max_model_len, 8192)
        max_entries = {r: -(-tokens // r) for r in {cfg.ratio(i) for i in range(cfg.n_layers + cfg.n_mtp_layers)} if r}
        self.pool = StatePool(
            cfg, max_seqs=max_seqs, max_entries=max_entries, page_size=page_size,
            spec_slack=num_draft_tokens + 1 if speculative else 0, dtype=model.dtype,
            device=model.embed.weight.device,
        )
        self.runner = ModelRunner(model, self.pool, compile=compile)
        # compile: torch.compile the decode step and the prefill stages (the first steps of each
        # shape pay the compilation)
        self.decoder = Decoder(model, self.pool, self.max_model_len, compile=compile)
        self.waiting: deque[list[Sequence]] = deque()
        self.running: list[Sequence] = []
        self._ids = itertools.count()
        self._req_ids = itertools.count()
        self.reserved: dict = {}
        self.eos = cfg.eos_token_id

    # ------------------------------------------------------------------ requests

    def add_request(self, prompt_ids: list[int], params: SamplingParams | None = None) -> list[Sequence]:
        params = params or SamplingParams()
        if not prompt_ids:
            raise ValueError("the prompt is empty: give at least one token")
        bad = [t for t in prompt_ids if not 0 <= t < self.cfg.vocab_size]
        if bad:
            raise ValueError(f"prompt token ids out of range [0, {self.cfg.vocab_size}): {bad[:5]}")
        total = len(prompt_ids) + params.max_new_tokens
        if total > self.max_model_len:
            raise ValueError(
                f"prompt ({len(prompt_ids)} tokens) + max_new_tokens ({params.max_new_tokens}) = {total} exceeds "
                f"the maximum model length {self.max_model_len}"
            )
        if params.n > self.pool.max_seqs:
            raise ValueError(f"n = {params.n} samples exceeds max_seqs = {self.pool.max_seqs}")
        if not self._fits_ever(total, params.n):
            raise ValueError(
                f"a request of {total} tokens x n = {params.n} samples can never fit the state pool "
                f"(raise kv_cache_tokens or lower max_new_tokens)"
            )
        rid = next(self._req_ids)
        seqs = []
        for i in range(params.n):
            gen = None
            if not params.greedy:
                gen = torch.Generator().manual_seed(
                    params.seed + i if params.seed is not None else int(torch.randint(0, 2**62, (1,)))
                )
            s = Sequence(next(self._ids), rid, i, list(prompt_ids), params, gen)
            if self.tokenizer is not None:
                s.decoder = IncrementalDecoder(self.tokenizer)
            seqs.append(s)
        self.waiting.append(seqs)
        return seqs

    def abort(self, seqs: list[Sequence]) -> None:
        """Cancel sequences (e.g. a client went away): their state returns to the pool now."""
        for group in list(self.waiting):
            if any(s in seqs for s in group):
                self.waiting.remove(group)
        for s in seqs:
            if s.status != FINISHED:
                self._finish(s, "abort")

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

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

    def _need(self, s: Sequence) -> int:
        return len(s.prompt_ids) + s.params.max_new_tokens + (self.k + 1 if self.speculative else 0)

    def _fits_ever(self, tokens: int, n: int) -> bool:
        if n > self.pool.max_seqs:
            return False
        return all(n * need <= self.pool.n_pages[g] - 1 for g, need in self.pool.pages_needed(tokens).items())

    def _admit(self) -> None:
        while self.waiting:
            group = self.waiting[0]
            need = self.pool.pages_needed(self._need(group[0]))
            free_slots = len(self.pool.free_slots)
            fits = free_slots >= len(group) and all(
                len(self.pool.free_pages[g]) - self.reserved.get(g, 0) >= n * len(group) for g, n in need.items()
            )
            if not fits:
                return
            self.waiting.popleft()
            for q in group:
                q.reserved = dict(need)
                for g, n in need.items():
                    self.reserved[g] = self.reserved.get(g, 0) + n
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
        logits, _ = self.decoder.step(ids, [s.state for s in seqs])
        for s in seqs:
            s.pending = None
        return [self._emit(s, logits[b, 0]) for b, s in enumerate(seqs)]

    def _draft(self, seqs: list[Sequence]) -> tuple[torch.Tensor, list[list[torch.Tensor]], dict | None]:
        """Draft k tokens per sequence with the MTP block, chained on its own output streams.

        Returns drafts [B, k], the distributions they were drawn from, and a snapshot of the MTP
        stack after its first (true) position, for the rollback."""
        states = [s.state for s in seqs]
        hid = torch.stack([s.last_hidden for s in seqs])[:, None]  # [B, 1, N, D]
        nxt = torch.tensor([[s.pending] for s in seqs], dtype=torch.long)
        drafts = torch.zeros(len(seqs), self.k, dtype=torch.long)
        dists: list[list[torch.Tensor]] = [[] for _ in seqs]
        snap = None
        for i in range(self.k):
            if i == 1:
                snap = self.runner.snapshot(states, MTP)
            q_logits, hid = self.runner.mtp(hid, nxt, states)
            for b, s in enumerate(seqs):
                q = target_distribution(q_logits[b, 0], s.params, s.prompt_ids, s.output_ids + drafts[b, :i].tolist())
                dists[b].append(q)
                drafts[b, i] = int(q.argmax()) if s.params.greedy else draw(q, s.generator)
            nxt = drafts[:, i : i + 1]
        return drafts, dists, snap

    def _speculate(self, seqs: list[Sequence]) -> list[Event]:
        states = [s.state for s in seqs]
        k = self.k
        drafts, q_dists, mtp_snap = self._draft(seqs)
        # verify [pending, d1..dk] with the main model in one pass
        snap = self.runner.snapshot(states, MAIN)
        self.runner.record = {}
        ids = torch.cat((torch.tensor([[s.pending] for s in seqs], dtype=torch.long), drafts), dim=1)
        p_logits, h = self.runner.forward(ids, states)
        record, self.runner.record = self.runner.record, None
        # accept / reject per sequence
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
        # roll the main stack back to what was accepted; redo the MTP positions with true streams
        live = [b for b, s in enumerate(seqs) if s.status != FINISHED]
        if live:
            ls = [states[b] for b in live]
            sub = {key: (kv[live], sc[live]) for key, (kv, sc) in record.items()}
            self.runner.rollback(ls, MAIN, _take(snap, live), [1 + keep[b] for b in live], sub)
            if mtp_snap is not None:
                self.runner.rollback(ls, MTP, _take(mtp_snap, live), [0] * len(live), None)
            for b in live:
                if keep[b]:
                    self.runner.mtp(h[b : b + 1, : keep[b]], drafts[b : b + 1, : keep[b]], [states[b]])
        return events

    # ------------------------------------------------------------------ tokens out

    def _emit(self, s: Sequence, logits: torch.Tensor, token: int | None = None) -> Event:
        """Choose (or take) the next token of `s`, record it, check the stop conditions."""
        if s.status == FINISHED:
            return Event(s, None, finished=True)
        if s.params.max_new_tokens == 0:  # nothing to generate (e.g. scoring the prompt): end without a token
            self._finish(s, "length")
            return Event(s, None, finished=True)
        if token is None:
            probs = target_distribution(logits, s.params, s.prompt_ids, s.output_ids)
            token = int(probs.argmax()) if s.params.greedy else draw(probs, s.generator)
        now = time.perf_counter()
        if s.first_token_at is None:
            s.first_token_at = now
        s.output_ids.append(token)
        if s.params.logprobs is not None:
            s.logprobs.append(token_logprobs(logits, token, s.params.logprobs))
        if s.decoder is not None:
            s.text += s.decoder.push(token)
        reason = None
        stops = s.params.stop
        if (token == self.eos and not s.params.ignore_eos) or token in s.params.stop_token_ids:
            reason = "stop"
        elif stops and any(t in s.text for t in stops):
            s.text = s.text[: min(s.text.index(t) for t in stops if t in s.text)]
            reason = "stop"
        elif len(s.output_ids) >= s.params.max_new_tokens:
            reason = "length"
        if reason == "length" and s.decoder is not None:
            s.text += s.decoder.flush()
        # Text that could still turn out to begin a stop string is held back until it cannot.
        hold = 0 if reason or not stops else max(len(t) for t in stops) - 1
        end = max(s.emitted, len(s.text) - hold)
        delta, s.emitted = s.text[s.emitted : end], end
        if reason:
            self._finish(s, reason)
        else:
            s.pending = token
        return Event(s, token, delta, finished=reason is not None)

    def _finish(self, s: Sequence, reason: str) -> None:
        s.status, s.finish_reason, s.pending = FINISHED, reason, None
        s.finished_at = time.perf_counter()
        if s.state is not None and s.state.slot >= 0:
            self.pool.release(s.state)
        for g, n in s.reserved.items():
            self.reserved[g] -= n
        s.reserved = {}
        if s.status == FINISHED and s.state is not None and s.prefilled < len(s.prompt_ids):
            for f in s.followers:  # the shared prefill was cancelled: its samples end too
                if f.status != FINISHED:
                    self._finish(f, reason)


def _take(snap: dict, rows: list[int]) -> dict:
    out = {"lengths": [snap["lengths"][b] for b in rows]}
    for key, val in snap.items():
        if key != "lengths":
            out[key] = (val[0][rows], val[1][rows])
    return out
