"""`torch.compile` as the engine uses it.

* Each call site compiles its own copy of the function's code: torch.compile keeps its graphs and
  its recompile budget per code object, so two engines in one process (two models, say) never
  share, evict or mistake each other's graphs.
* Inductor's C++ wrapper: the graph's kernels and matmuls are called from C++, not from Python,
  which on a decode step is most of the time outside the matmuls.
* The state a step writes (rings, pages) is written in place: inductor's locality reordering is
  off, since it made the rings' writes copies of the whole ring (see `compile_fn`).
* `own_model`: drop the guards on the model's modules. Only for a call site that only ever sees one
  model (the decoder); the guards would check hundreds of parameters on every step for nothing.
* Scalars read from tensors (an expert index) stay in the graph, and a call site may keep up to 64
  graphs (layer kinds x batch and chunk shapes) before torch.compile falls back to eager.
* What inductor compiles is cached on disk (`use_cache_dir`): a later process with the same model
  config, shapes and torch version loads it instead of compiling again.
* `Background`: the default engine (compile="auto") compiles its decode graphs in a thread while
  the step runs eagerly, so the first tokens never wait for the compiler.
"""

from __future__ import annotations

import functools
import os
import queue
import sys
import threading
import time
import types
import warnings

import torch

from ..errors import UserError

CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"
MODE_ENV = "TRILLION_COMPILE"  # the default mode: unset / "0" eager, "auto" background; "0" also turns "auto" off
NOTICE_S = 5.0  # a compilation taking longer than this says so on stderr


def compile_fn(fn, *, dynamic: bool | None, own_model: bool = False):
    code = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    # reorder_for_locality off: that pass moves each state read (a window or compressor ring) down
    # to its first use, past the step's write to the same ring, and a write with a later read cannot
    # be made in place, so every ring was copied whole and copied back on every step (6-10 copies of
    # 512 KiB a bench-94m decode step; docs/engine.md)
    options = {"cpp_wrapper": True, "reorder_for_locality": False}
    if own_model:
        options["guard_filter_fn"] = torch.compiler.skip_guard_on_all_nn_modules_unsafe
    compiled = torch.compile(code, dynamic=dynamic, options=options)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        with torch._dynamo.config.patch(recompile_limit=64, capture_scalar_outputs=True):
            return compiled(*args, **kwargs)

    call.run_only = compiled  # no compilation config: for calls that must only run what is compiled
    return call


def resolve_mode(compile) -> bool | str:
    """compile as given to the engine -> True (compile now), "auto" (in the background) or False.

    None (the default) is eager unless TRILLION_COMPILE=auto: the background compilation shares the
    CPU and the GIL with the eager steps it would replace, and on a 2-core machine it made a 64-token
    generate of the demo model take 30 s instead of 0.6 s, on a warm cache too (dynamo traces again in
    every process). So it is opt-in until it pays for itself in a short run (docs/performance.md)."""
    env = os.environ.get(MODE_ENV, "").strip().lower()
    if compile is None:
        return "auto" if env in ("auto", "1", "background") else False
    if compile == "auto":
        return False if env in ("0", "false", "no", "off") else "auto"
    if isinstance(compile, bool):
        return compile
    raise UserError(f"compile = {compile!r}; expected True, False or 'auto'")


def use_cache_dir() -> str:
    """Inductor's on-disk caches (FX graphs, AOT autograd, kernels) go under the user's cache
    directory (~/.cache/trillion/inductor, or $XDG_CACHE_HOME/...) unless the user chose a folder
    with TORCHINDUCTOR_CACHE_DIR; inductor keys the entries by torch version, config and shapes."""
    if not os.environ.get(CACHE_ENV):
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        os.environ[CACHE_ENV] = os.path.join(base, "trillion", "inductor")
    return os.environ[CACHE_ENV]


def missing_compiler() -> str | None:
    """Why inductor cannot compile C++ here (None: it can)."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception as e:  # noqa: BLE001  (torch raises its own kinds for a missing or unusable compiler)
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    return None


class Background:
    """Compiles graphs in one thread while the caller runs eagerly.

    `request(key, job)` queues `job` (a call that compiles the graph of `key` on scratch inputs)
    once per key; `ready(key)` is True once that job ran and nothing compiles: the caller then runs
    the graph with `run` (never compiling there: a call whose guards fail runs eagerly instead).
    Compiled graphs are only ever called while the thread is idle, so the two threads never
    compile, or run a graph, at the same time. A failed job turns compilation off: `failed()`
    warns once (from the caller's thread) and says so."""

    def __init__(self, what: str = "the decode step"):
        self.what = what
        self.done: set = set()
        self.queued: set = set()
        self.jobs: queue.Queue = queue.Queue()
        self.idle = threading.Event()
        self.idle.set()
        self.error: BaseException | None = None
        self.warned = False
        self.seconds = 0.0  # spent compiling
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()  # a job queued and the thread going idle do not cross

    def request(self, key, job) -> None:
        if key in self.queued or self.error is not None:
            return
        self.queued.add(key)
        with self.lock:
            self.idle.clear()
            self.jobs.put((key, job))
        if self.thread is None:
            self.thread = threading.Thread(target=self._work, name="trillion-compile", daemon=True)
            self.thread.start()

    def ready(self, key) -> bool:
        return key in self.done and self.idle.is_set() and self.error is None

    def wait(self, timeout: float | None = None) -> bool:
        """Until every queued job ran (True) or `timeout` seconds passed (False)."""
        return self.idle.wait(timeout)

    def failed(self) -> bool:
        if self.error is not None and not self.warned:
            self.warned = True
            warnings.warn(f"compiling {self.what} failed ({type(self.error).__name__}: {self.error}); "
                          "it keeps running eagerly (compile=False hides this)", stacklevel=4)
        return self.error is not None

    @staticmethod
    def run(fn, *args):
        """Call a graph that the thread compiled; never compile here."""
        with torch.compiler.set_stance("eager_on_recompile"):
            return fn.run_only(*args)

    def _work(self) -> None:
        while True:
            key, job = self.jobs.get()
            start = time.perf_counter()
            notice = threading.Timer(NOTICE_S, lambda: print(
                f"trillion: compiling {self.what} in the background (decoding runs eagerly until it is ready; "
                f"cached in {os.environ.get(CACHE_ENV, 'torch inductor default')}) ...", file=sys.stderr, flush=True))
            notice.daemon = True
            notice.start()
            try:
                with torch.no_grad():
                    job()
                self.done.add(key)
            except Exception as e:  # noqa: BLE001  (anything: the engine keeps serving eagerly)
                self.error = e
            finally:
                notice.cancel()
                took = time.perf_counter() - start
                self.seconds += took
                if took > NOTICE_S and self.error is None:
                    print(f"trillion: {self.what} compiled ({took:.0f} s)", file=sys.stderr, flush=True)
                with self.lock:
                    if self.jobs.empty():
                        self.idle.set()
