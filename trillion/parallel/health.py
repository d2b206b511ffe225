"""Noticing a lost rank: a heartbeat per process in the rendezvous store, watched by every other.

A process that dies leaves its peers blocked in a collective (or failing in one with a message that
names a socket, not a rank). So each process runs a daemon thread that, every `interval` seconds,
bumps its own counter `hb/<rank>` in the store and reads everyone else's. A counter that has not
moved for `grace` seconds (measured on the reader's own clock: no clocks are compared across
machines), from a rank that has not said it is done, means that rank is lost: the watcher writes
the verdict into the store (the others adopt it on their next beat, even if the store's host then
leaves), prints one line naming the lost rank and ends its own process with EXIT_RANK_LOST,
wherever the main thread is blocked. If the store itself cannot be reached, the process that hosts
it (rank 0, or the torchrun agent) is gone, and the message says so.

`guard()` wraps an SPMD program's body: an exception from a failed collective (gloo reports the
peer's address only) waits for the heartbeat verdict, so the process still exits naming the rank.
A process that finishes normally calls `Watchdog.stop()` (mesh.shutdown does), which marks it done.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch.distributed as dist

EXIT_RANK_LOST = 3

_current: Watchdog | None = None


class RankLost(RuntimeError):
    """A peer process is gone; the message names it."""


class Watchdog:
    """Heartbeats of this rank and watch over the others (see the module docstring)."""

    def __init__(
        self,
        store: dist.Store,
        rank: int,
        world: int,
        *,
        interval: float = 1.0,
        grace: float = 30.0,
        on_lost: Callable[[str], None] | None = None,
    ):
        # keys per launch attempt: torchrun's agent keeps its store across restarts of the workers
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        self.store = dist.PrefixStore(f"trillion/health/{attempt}", store.clone())
        self.rank, self.world, self.interval, self.grace = rank, world, interval, grace
        self.on_lost = on_lost or _exit_lost
        self.verdict: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trillion-heartbeat", daemon=True)

    def start(self) -> Watchdog:
        global _current
        self.store.add(f"hb/{self.rank}", 1)
        self._thread.start()
        _current = self
        return self

    def stop(self) -> None:
        """This rank is done: its silence from now on is not a loss."""
        global _current
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10 * self.interval)
        with contextlib.suppress(Exception):  # the store's host may be gone already: nothing to tell then
            self.store.add(f"done/{self.rank}", 1)
        if _current is self:
            _current = None

    def _run(self) -> None:
        peers = [r for r in range(self.world) if r != self.rank]
        last = dict.fromkeys(peers, -1)
        seen = dict.fromkeys(peers, time.monotonic())
        while not self._stop.wait(self.interval):
            try:
                if self.store.check(["verdict"]):  # a peer saw a loss first: stop for the same reason
                    self._report(self.store.get("verdict").decode(), publish=False)
                    return
                self.store.add(f"hb/{self.rank}", 1)
                now = time.monotonic()
                lost = []
                for r in peers:
                    beat = self.store.add(f"hb/{r}", 0)  # add 0: read without blocking
                    if beat != last[r]:
                        last[r], seen[r] = beat, now
                    elif now - seen[r] > self.grace and not self.store.add(f"done/{r}", 0):
                        lost.append(r)
            except Exception as e:  # noqa: BLE001 (any store failure means its host is gone)
                if self._stop.is_set():
                    return
                self._report(
                    f"lost the rendezvous store ({type(e).__name__}: {e}); the process that hosts it "
                    "(rank 0, or the torchrun agent) is gone",
                    publish=False,
                )
                return
            if lost:
                names = ", ".join(f"rank {r}" for r in lost)
                self._report(f"{names} of {self.world} stopped responding (no heartbeat for {self.grace:g} s)")
                return

    def _report(self, why: str, publish: bool = True) -> None:
        if publish:  # tell the others (the store's host may be this process: linger while they read it)
            with contextlib.suppress(Exception):  # the store is gone too: each peer finds out by itself
                self.store.set("verdict", why)
                time.sleep(2 * self.interval)
        self.verdict = f"trillion rank {self.rank}: {why}; stopping"
        self.on_lost(self.verdict)

    def wait_verdict(self, timeout: float) -> str | None:
        """Wait up to `timeout` seconds for the watcher to name a lost rank."""
        end = time.monotonic() + timeout
        while self.verdict is None and time.monotonic() < end and self._thread.is_alive():
            time.sleep(min(0.1, self.interval))
        return self.verdict


def _exit_lost(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
    os._exit(EXIT_RANK_LOST)  # the main thread may be blocked inside a collective: no clean way out


def current() -> Watchdog | None:
    """This process's running watchdog (started by mesh.init_mesh), or None."""
    return _current


@contextmanager
def guard() -> Iterator[None]:
    """Run an SPMD body; when it fails while a peer is lost, exit naming the lost rank instead."""
    try:
        yield
    except Exception:
        w = _current
        verdict = w.wait_verdict(w.grace + 3 * w.interval) if w is not None else None
        if verdict is not None:  # the default on_lost has ended the process already; a custom one may not
            raise RankLost(verdict) from None
        raise


def fail(why: str) -> None:
    """This rank cannot go on with the others (a step failed half-way through its collectives): tell
    them through the store, so each stops naming this rank and the reason, then end this process."""
    w = _current
    if w is None:
        print(why, file=sys.stderr, flush=True)
        os._exit(EXIT_RANK_LOST)
    w._report(why)
