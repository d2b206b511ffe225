"""The engine thread: the one place that calls `Engine.add_request`, `step` and `abort`.

The engine is not thread-safe, so one background thread owns it. Request handlers (in the
asyncio event loop) hand requests over through a thread-safe inbox and get their tokens back on
a per-request asyncio queue. The thread's loop:
1. take everything in the inbox: new requests join the engine's queue (the engine admits them
   into the running batch between decode steps), cancellations free their state at once;
2. run one engine step (one prefill chunk plus one decode step for the whole batch);
3. send each request the tokens of its sequences, update the metrics.
When there is nothing to do it sleeps on the inbox.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass

from ..engine.engine import Engine, Sequence
from ..engine.sampling import SamplingParams
from .errors import APIError, QueueFull
from .metrics import Metrics

log = logging.getLogger("trillion.serve")


@dataclass
class TokenOut:
    """One event of one sequence: a new token (None: ended without one), and why it ended."""

    index: int
    token_id: int | None
    finish_reason: str | None = None
    logprob: dict | None = None
    prompt_logprobs: list | None = None  # on a sequence's first event, when it asked for them


class Ticket:
    """One request in flight. `accepted` resolves once the engine has taken (or refused) it;
    `next()` waits for the next batch of its tokens."""

    def __init__(self, prompt_ids: list[int], params: SamplingParams, loop: asyncio.AbstractEventLoop):
        self.prompt_ids, self.params, self.loop = prompt_ids, params, loop
        self.accepted: asyncio.Future = loop.create_future()
        self.events: asyncio.Queue = asyncio.Queue()
        self.seqs: list[Sequence] = []
        self.arrival = time.perf_counter()

    async def next(self) -> list[TokenOut]:
        item = await self.events.get()
        if isinstance(item, BaseException):
            raise item
        return item

    # called from the engine thread
    def _call(self, fn, *args) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the event loop is closed: nobody is waiting any more
            pass

    def _resolve(self, error: BaseException | None) -> None:
        def done(fut=self.accepted):
            if not fut.done():
                fut.set_exception(error) if error else fut.set_result(None)

        self._call(done)


class EngineWorker:
    def __init__(self, engine: Engine, metrics: Metrics | None = None, *, max_queue: int = 64):
        self.engine, self.metrics, self.max_queue = engine, metrics or Metrics(), max_queue
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.tickets: dict[int, Ticket] = {}  # sequence id -> its request
        self._seen: dict[int, tuple[int, float]] = {}  # sequence id -> (tokens sent, time of the last)
        self._lock = threading.Lock()
        self._unread = 0  # requests in the inbox
        self.paused = threading.Event()  # set: admit and cancel, but do not step (tests)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="trillion-engine", daemon=True)
        self.error: BaseException | None = None  # the last engine failure, for /health
        self.metrics.kv_pages_total.set(sum(engine.pool.n_pages.values()))

    # ------------------------------------------------------------------ event-loop side

    def start(self) -> None:
        if not self.thread.is_alive():
            self.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.inbox.put(("wake", None))
        if self.thread.is_alive():
            self.thread.join(timeout)

    def queue_depth(self) -> int:
        """Requests not yet in the running batch."""
        return self._unread + len(self.engine.waiting)

    def submit(self, prompt_ids: list[int], params: SamplingParams) -> Ticket:
        """Queue a request; raises QueueFull (nothing queued) when `max_queue` requests wait already."""
        if not self.thread.is_alive():
            raise APIError("the engine thread is not running", status=503)
        if self.queue_depth() >= self.max_queue:
            raise QueueFull(f"the server queue is full ({self.max_queue} requests waiting); retry shortly")
        ticket = Ticket(prompt_ids, params, asyncio.get_running_loop())
        with self._lock:
            self._unread += 1
        self.inbox.put(("add", ticket))
        return ticket

    def abort(self, ticket: Ticket, indices: list[int] | None = None) -> None:
        """Cancel a request's sequences (all, or those with these sample indices)."""
        self.inbox.put(("abort", (ticket, indices)))

    def idle(self) -> bool:
        pool = self.engine.pool
        return (not self.tickets and self._unread == 0 and not self.engine.has_work()
                and pool.pages_in_use() == 0 and pool.slots_in_use() == 0)

    # ------------------------------------------------------------------ engine thread

    def _run(self) -> None:
        while not self._stop.is_set():
            busy = self.engine.has_work() and not self.paused.is_set()
            self._drain(block=not busy)
            if self._stop.is_set() or self.paused.is_set() or not self.engine.has_work():
                if not self._stop.is_set():
                    self.engine.tick()
                continue
            try:
                events = self.engine.step()
            except Exception as e:  # a failed step must not take the server down: end what ran
                log.exception("engine step failed; cancelling the %d sequences in flight", len(self.tickets))
                self.error = e
                self._fail_all(e)
                continue
            self._dispatch(events)
            self._gauges()
        self._fail_all(RuntimeError("the server is shutting down"))

    def _drain(self, block: bool) -> None:
        try:
            item = self.inbox.get(timeout=0.05) if block else self.inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            kind, arg = item
            if kind == "add":
                self._add(arg)
            elif kind == "abort":
                self._abort(*arg)
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                break
        self._gauges()

    def _add(self, t: Ticket) -> None:
        with self._lock:
            self._unread -= 1
        try:
            t.seqs = self.engine.add_request(t.prompt_ids, t.params)
        except Exception as e:  # noqa: BLE001 - a bad request (ValueError with the reason): tell its handler only
            t._resolve(e)
            return
        for s in t.seqs:
            self.tickets[s.id] = t
            self._seen[s.id] = (0, t.arrival)
        self.metrics.prompt_tokens.inc(len(t.prompt_ids))
        t._resolve(None)

    def _abort(self, t: Ticket, indices: list[int] | None) -> None:
        seqs = [s for s in t.seqs if s.finish_reason is None and (indices is None or s.index in indices)]
        if seqs:
            self.engine.abort(seqs)
            self.metrics.aborted.inc(len(seqs))
        for s in seqs:
            self.tickets.pop(s.id, None)
            self._seen.pop(s.id, None)

    def _dispatch(self, events) -> None:
        now = time.perf_counter()
        batches: dict[int, tuple[Ticket, list[TokenOut]]] = {}
        m = self.metrics
        for ev in events:
            s = ev.seq
            t = self.tickets.get(s.id)
            if t is None:  # cancelled meanwhile
                continue
            lp = None
            sent, last = self._seen[s.id]
            scores = list(s.prompt_logprobs) if sent == 0 and s.params.prompt_logprobs is not None else None
            if ev.token_id is not None:
                if s.params.logprobs is not None and sent < len(s.logprobs):
                    lp = s.logprobs[sent]
                (m.ttft if sent == 0 else m.itl).observe(now - last)
                m.generation_tokens.inc()
                self._seen[s.id] = (sent + 1, now)
            batches.setdefault(id(t), (t, []))[1].append(
                TokenOut(s.index, ev.token_id, s.finish_reason if ev.finished else None, lp, scores))
            if ev.finished:
                self.tickets.pop(s.id, None)
                self._seen.pop(s.id, None)
                if all(q.finish_reason is not None for q in t.seqs):
                    m.latency.observe(now - t.arrival)
        for t, items in batches.values():
            t._call(t.events.put_nowait, items)

    def _fail_all(self, error: BaseException) -> None:
        live = {id(t): t for t in self.tickets.values()}
        while True:  # requests still in the inbox never reached the engine
            try:
                kind, arg = self.inbox.get_nowait()
            except queue.Empty:
                break
            if kind == "add":
                with self._lock:
                    self._unread -= 1
                arg._resolve(error)
        for t in live.values():
            try:
                self.engine.abort([s for s in t.seqs if s.finish_reason is None])
            except Exception:
                log.exception("abort after a failed step")
            t._call(t.events.put_nowait, error)
        self.tickets.clear()
        self._seen.clear()
        self._gauges()

    def _gauges(self) -> None:
        m, pool = self.metrics, self.engine.pool
        m.queue_depth.set(self.queue_depth())
        m.running.set(len(self.engine.running))
        m.kv_pages.set(pool.pages_in_use())
        m.slots.set(pool.slots_in_use())
