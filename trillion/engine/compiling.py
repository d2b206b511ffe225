"""`torch.compile` as the engine uses it (compile=True).

* Each call site compiles its own copy of the function's code: torch.compile keeps its graphs and
  its recompile budget per code object, so two engines in one process (two models, say) never
  share, evict or mistake each other's graphs.
* Inductor's C++ wrapper: the graph's kernels and matmuls are called from C++, not from Python,
  which on a decode step is most of the time outside the matmuls.
* `own_model`: drop the guards on the model's modules. Only for a call site that only ever sees one
  model (the decoder); the guards would check hundreds of parameters on every step for nothing.
* Scalars read from tensors (an expert index) stay in the graph, and a call site may keep up to 64
  graphs (layer kinds x batch and chunk shapes) before torch.compile falls back to eager.
"""

from __future__ import annotations

import functools
import types

import torch


def compile_fn(fn, *, dynamic: bool | None, own_model: bool = False):
    code = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    options = {"cpp_wrapper": True}
    if own_model:
        options["guard_filter_fn"] = torch.compiler.skip_guard_on_all_nn_modules_unsafe
    compiled = torch.compile(code, dynamic=dynamic, options=options)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        with torch._dynamo.config.patch(recompile_limit=64, capture_scalar_outputs=True):
            return compiled(*args, **kwargs)

    return call
