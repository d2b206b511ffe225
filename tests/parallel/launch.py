"""Start N worker processes the way torchrun does (RANK, WORLD_SIZE, MASTER_ADDR/PORT in the
environment) and collect each one's exit code and output. Not torchrun itself: its agent stops every
worker as soon as one fails, and the lost-rank test needs to see what the survivors do."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Exit:
    rank: int
    code: int | None  # None: still running at the deadline (then killed)
    output: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(world: int, *args: str, timeout: float = 240.0) -> list[Exit]:
    """Run `python -m tests.parallel.workers *args` as ranks 0..world-1; wait up to `timeout` s."""
    port = free_port()
    procs = []
    for rank in range(world):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
        }
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tests.parallel.workers", *args],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ))
    exits, deadline = [], time.monotonic() + timeout
    for rank, p in enumerate(procs):
        try:
            out, _ = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
            exits.append(Exit(rank, p.returncode, out))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            out, _ = p.communicate()
            exits.append(Exit(rank, None, out))
    return exits


def check(exits: list[Exit]) -> None:
    """Fail with every rank's output unless all ranks exited 0."""
    bad = [e for e in exits if e.code != 0]
    if bad:
        text = "\n".join(f"--- rank {e.rank} exited {e.code}:\n{e.output[-3000:]}" for e in bad)
        raise AssertionError(f"{len(bad)} of {len(exits)} ranks failed\n{text}")
