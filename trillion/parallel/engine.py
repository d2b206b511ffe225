"""The engine across processes (SPMD): rank 0 schedules, every dp group runs its own sequences.

    mesh = init_mesh(dp, tp, cfg=cfg); model = load_sharded(folder, mesh)
    engine = DistributedEngine(model, mesh, **engine_options)
    if engine.leader:                       # rank 0: the Engine interface (LLM, the server use it)
        LLM(engine=engine).generate(...)
        engine.close()                      # the followers' loops end
    else:
        engine.follow()                     # every other rank, until rank 0 closes
    shutdown()

Each dp group owns its sequences and their state pool: every rank builds a local `Engine` over its
part of the model, and the ranks of one tp group hold identical engines (same requests, same
scheduling, same logits after the tp collectives, same seeds: their samples agree). Rank 0 is the
front: it checks a request with its own engine's rules, gives it to the least busy dp group and
keeps a mirror `Sequence` the caller reads. Each `step()` it broadcasts what changed (new requests
with their group, aborts, stop-string cuts) to every rank; all ranks step their local engine; the
first rank of each tp group sends its events back to rank 0 (`gather_object`), which applies them
to the mirrors and returns them as the step's events.

Expert parallelism makes every forward pass a collective over all ranks, but the groups' steps
differ (one prefills two chunks, one decodes, one is idle). `PassGate` lines them up: before each
pass a rank says which stack it is about to run (the main layers, or MTP block d), all ranks agree
on one kind per round (main first), those who want it run it and the others run that stack with no
token (`join_idle`), until every rank has said it is done with the step. Every rank thus runs the
same MoE layers in the same order, whatever its own work.

An idle leader calls `tick()` (the server's loop does) so the followers, blocked in the broadcast,
hear from it at least every TICK_S seconds; a lost rank stops the others through the watchdog
(health.py). Compiled steps are not used here: the compiled graphs' expert shortcuts index the
experts by global id, and a rank holds only its own.
"""

from __future__ import annotations

import dataclasses
import itertools
import time

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh

from ..engine.engine import FINISHED, Engine, Event, Sequence
from ..engine.runner import ModelRunner
from ..engine.sampling import SamplingParams
from ..errors import UserError
from ..model import Transformer
from . import health
from .apply import join_idle

TICK_S = 1.0  # an idle leader broadcasts at least this often


class PassGate:
    """Runs every forward pass as a collective round over all ranks (see the module docstring).

    A pass kind is an int: 0 the main layers, 1 + d the MTP block d."""

    def __init__(self, model: Transformer):
        self.model = model
        self.kinds = 1 + len(model.mtp)
        self.device = model.embed.weight.device  # where the votes are summed (nccl needs the device)

    def _agree(self, want: int | None) -> int | None:
        votes = torch.zeros(self.kinds, dtype=torch.int32, device=self.device)
        if want is not None:
            votes[want] = 1
        dist.all_reduce(votes)
        wanted = votes.nonzero()
        return int(wanted[0]) if len(wanted) else None

    def enter(self, kind: int) -> None:
        """Before this rank runs a pass of `kind`: join the others' passes until it is that kind's turn."""
        while (turn := self._agree(kind)) != kind:
            self.idle(turn)

    def finish(self) -> None:
        """This rank's step is done: join the others' passes until every rank is done."""
        while (turn := self._agree(None)) is not None:
            self.idle(turn)

    def idle(self, kind: int) -> None:
        """One pass of `kind` with no token: this rank's part of every expert exchange."""
        if kind == 0:
            join_idle(self.model, "main")
        else:
            join_idle(self.model, "mtp", kind - 1)


class GatedRunner(ModelRunner):
    """A ModelRunner whose passes go through a PassGate first."""

    gate: PassGate

    def forward(self, ids, seqs, *, last_only: bool = False):
        self.gate.enter(0)
        return super().forward(ids, seqs, last_only=last_only)

    def mtp(self, hidden, next_ids, seqs, depth: int = 0):
        self.gate.enter(1 + depth)
        return super().mtp(hidden, next_ids, seqs, depth)


@dataclasses.dataclass
class _Out:
    """One event as it travels to rank 0: the mirror's key and what the event changed."""

    key: int
    token: int | None
    finished: bool
    finish_reason: str | None
    logprobs: dict | None
    prompt_logprobs: list | None
    drafted: int
    accepted: int


class DistributedEngine:
    """The Engine's interface on rank 0 (`leader`), a follower loop on the others (module docstring).

    engine_options as for `Engine` (max_seqs and the pool's size are per dp group); compile is refused."""

    def __init__(self, model: Transformer, mesh: DeviceMesh, **engine_options):
        if engine_options.get("compile") is True:
            raise UserError("compile=True is not supported with several processes yet: the compiled graphs index "
                            "the routed experts by global id, and each rank holds only its own")
        engine_options.update(compile=False, experts="grouped")  # the default ("auto"): eager here
        self.model, self.cfg, self.mesh = model, model.cfg, mesh
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.dp, self.tp = mesh["dp"].size(), mesh["tp"].size()
        self.group, self.tp_rank = mesh.get_local_rank("dp"), mesh.get_local_rank("tp")
        self.leader = self.rank == 0
        self.local = Engine(model, **engine_options)
        runner = self.local.runner
        runner.__class__ = GatedRunner
        runner.gate = self.gate = PassGate(model)
        self.max_model_len = self.local.max_model_len
        self.pool = self.local.pool  # this rank's dp group's pool (the server's gauges read rank 0's)
        self._mine: dict[int, Sequence] = {}  # key -> this group's local sequence
        # the leader's side
        self._mirrors: dict[int, Sequence] = {}  # key -> what callers read
        self._group_of: dict[int, int] = {}
        self._outbox: dict[str, list] = {"add": [], "abort": [], "stop": []}
        self._keys = itertools.count()
        self._requests = itertools.count()
        self._last_broadcast = time.monotonic()
        self._closed = False

    # ------------------------------------------------------------------ the Engine interface (rank 0)

    @property
    def waiting(self) -> list[list[Sequence]]:
        """Requests not yet started: sent to no group yet, or waiting in rank 0's group."""
        sent = [[self._mirrors[k] for k in keys if k in self._mirrors] for _, keys, _, _ in self._outbox["add"]]
        return [group for group in sent if group] + list(self.local.waiting)

    @property
    def running(self) -> list[Sequence]:
        return [s for s in self._mirrors.values() if s.status != FINISHED and s.first_token_at is not None]

    def add_request(self, prompt_ids: list[int], params: SamplingParams | None = None) -> list[Sequence]:
        self._need_leader("add_request")
        params = params or SamplingParams()
        self.local.check_request(prompt_ids, params)
        if not params.greedy and params.seed is None:  # every rank of the group must draw the same samples
            params = dataclasses.replace(params, seed=int(torch.randint(0, 2**62, (1,))))
        load = [0] * self.dp
        for key, s in self._mirrors.items():
            if s.status != FINISHED:
                load[self._group_of[key]] += 1
        group = min(range(self.dp), key=load.__getitem__)
        rid, keys, seqs = next(self._requests), [], []
        for i in range(params.n):
            key = next(self._keys)
            seqs.append(Sequence(key, rid, i, list(prompt_ids), params, None))
            self._mirrors[key], self._group_of[key] = seqs[-1], group
            keys.append(key)
        self._outbox["add"].append((group, keys, list(prompt_ids), params))
        return seqs

    def abort(self, seqs: list[Sequence], reason: str = "abort") -> None:
        for s in seqs:
            if s.status != FINISHED and s.id in self._mirrors:
                self._end(s, reason)
                self._outbox["abort"].append((s.id, reason))

    def stop(self, s: Sequence, keep: int) -> None:
        del s.output_ids[keep:]
        del s.logprobs[keep:]
        if s.status != FINISHED:
            self._end(s, "stop")
        s.finish_reason = "stop"
        self._outbox["stop"].append((s.id, keep))

    def has_work(self) -> bool:
        return any(s.status != FINISHED for s in self._mirrors.values())

    def tick(self) -> None:
        """Nothing to step: pass on what changed, and let the followers know rank 0 is alive."""
        if self._outbox_full() or time.monotonic() - self._last_broadcast >= TICK_S:
            self._round(step=False)

    def step(self) -> list[Event]:
        self._need_leader("step")
        return self._round(step=True)

    def close(self) -> None:
        """End the followers' loops (rank 0, once)."""
        if self.leader and not self._closed:
            self._closed = True
            self._broadcast({"quit": True})

    # ------------------------------------------------------------------ the followers

    def follow(self) -> None:
        """Every rank but 0: run what rank 0 broadcasts until it closes."""
        if self.leader:
            raise RuntimeError("rank 0 leads: it calls step(), the other ranks follow()")
        while True:
            msg = self._broadcast(None)
            if msg.get("quit"):
                return
            self._apply(msg)
            if msg["step"]:
                self._gather(self._step_local())

    # ------------------------------------------------------------------ both

    def _round(self, step: bool) -> list[Event]:
        msg = {"quit": False, "step": step, **self._outbox}
        self._outbox = {"add": [], "abort": [], "stop": []}
        self._broadcast(msg)
        self._apply(msg)
        if not step:
            return []
        gathered = self._gather(self._step_local())
        return [ev for outs in gathered for ev in self._mirror(outs)]

    def _broadcast(self, msg):
        box = [msg]
        dist.broadcast_object_list(box, src=0)
        self._last_broadcast = time.monotonic()
        return box[0]

    def _apply(self, msg: dict) -> None:
        """Make this rank's engine take the changes the message carries for its dp group."""
        for group, keys, prompt_ids, params in msg["add"]:
            if group == self.group:
                for key, s in zip(keys, self.local.add_request(prompt_ids, params)):
                    self._mine[key] = s
        for key, reason in msg["abort"]:
            if key in self._mine:
                self.local.abort([self._mine.pop(key)], reason)
        for key, keep in msg["stop"]:
            if key in self._mine:
                self.local.stop(self._mine.pop(key), keep)

    def _step_local(self) -> list[_Out]:
        keys = {id(s): k for k, s in self._mine.items()}
        emitted = {k: len(s.output_ids) for k, s in self._mine.items()}  # tokens before this step
        try:
            events = self.local.step() if self.local.has_work() else []
            self.gate.finish()
        except Exception as e:  # the ranks are out of step now: no way to go on together
            health.fail(f"rank {self.rank} failed in an engine step ({type(e).__name__}: {e})")
            raise
        outs = []
        for ev in events:
            s = ev.seq
            key = keys.get(id(s))
            if key is None:
                continue
            first = emitted[key] == 0
            lp = None
            if ev.token_id is not None:
                if s.params.logprobs is not None:
                    lp = s.logprobs[emitted[key]]
                emitted[key] += 1
            plp = list(s.prompt_logprobs) if s.params.prompt_logprobs is not None and first else None
            outs.append(_Out(key, ev.token_id, ev.finished, s.finish_reason, lp, plp, s.drafted, s.accepted))
            if ev.finished:
                self._mine.pop(key, None)
        return outs

    def _gather(self, outs: list[_Out]) -> list[list[_Out]]:
        """Each tp group's first rank sends its events to rank 0 (the others' are the same)."""
        sent = outs if self.tp_rank == 0 else []
        box = [None] * self.world if self.leader else None
        dist.gather_object(sent, box, dst=0)
        return box or []

    def _mirror(self, outs: list[_Out]) -> list[Event]:
        now, events = time.perf_counter(), []
        for o in outs:
            s = self._mirrors.get(o.key)
            if s is None or s.status == FINISHED:  # aborted or cut on rank 0 meanwhile
                continue
            if o.prompt_logprobs is not None and not s.prompt_logprobs:
                s.prompt_logprobs = o.prompt_logprobs
            s.drafted, s.accepted = o.drafted, o.accepted
            if o.token is not None:
                s.first_token_at = s.first_token_at or now
                s.output_ids.append(o.token)
                if o.logprobs is not None:
                    s.logprobs.append(o.logprobs)
            if o.finished:
                self._end(s, o.finish_reason)
            events.append(Event(s, o.token, o.finished))
        return events

    def _end(self, s: Sequence, reason: str | None) -> None:
        s.status, s.finish_reason, s.finished_at = FINISHED, reason, time.perf_counter()
        self._mirrors.pop(s.id, None)
        self._group_of.pop(s.id, None)

    def _outbox_full(self) -> bool:
        return any(self._outbox.values())

    def _need_leader(self, what: str) -> None:
        if not self.leader:
            raise RuntimeError(f"{what}() runs on rank 0; the other ranks call follow()")
