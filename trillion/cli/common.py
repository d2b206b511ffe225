"""What the commands share: help that shows defaults, checked numbers, engine options, the default
model, reading text people give, and a Ctrl-C that waits for the end of an engine step."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

from ..errors import UserError

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16"}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to an option's help, unless the help already speaks of its default or
    there is nothing to show (no default, a flag that is off, an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        nothing = d is None or d is False or d is argparse.SUPPRESS or (isinstance(d, list) and not d)
        if nothing or "default" in text or not action.option_strings:
            return text
        return super()._get_help_string(action)


def at_least(lo: int):
    """An argparse type: an integer >= lo, else the usual one-line usage error naming the option."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {value}")
        return value

    return parse


positive_int, non_negative_int = at_least(1), at_least(0)


def context_tokens(text: str) -> int:
    """An argparse type: a token count >= 1 as 4096, 128K or 1M (K = 1024, M = 1024**2)."""
    from ..kvcost import parse_tokens

    try:
        n = parse_tokens(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return n


def add_threads_arg(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads (default: torch's choice, one per core)")


def set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def add_engine_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("engine")
    g.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="compute dtype")
    g.add_argument("--max-seqs", "--max-num-seqs", dest="max_seqs", type=positive_int, default=8,
                   help="sequences decoded together (--max-num-seqs: vLLM's name)")
    g.add_argument("--max-model-len", type=context_tokens, default=None, metavar="N",
                   help="prompt + new tokens limit: 4096, 128K, 1M (default: the model's position limit)")
    g.add_argument("--allow-long-context", action="store_true",
                   help="let --max-model-len pass the model's position limit (a warning: it was not trained that long)")
    g.add_argument("--kv-dtype", choices=["auto", "bf16", "float32", "fp8"], default="auto",
                   help="attention-state storage: auto = the compute dtype; fp8 = the release's FP8 KV and FP4 "
                        "indexer keys")
    g.add_argument("--prefill-chunk", type=positive_int, default=512, help="prompt tokens per prefill step")
    add_mesh_args(g)
    g.add_argument("--speculative", choices=["mtp"], default=None, help="self-speculative decoding with the MTP block")
    g.add_argument("--num-draft-tokens", type=positive_int, default=1, help="draft tokens per speculative step")
    add_threads_arg(g)
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="default: eager (TRILLION_COMPILE=auto: the decode step compiles in the background, cached "
                        "on disk, while it runs eagerly); --compile: compile it and the prefill stages before "
                        "use (minutes, then cached); --no-compile: eager")


def add_mesh_args(g) -> None:
    g.add_argument("--tp", type=positive_int, default=None,
                   help="tensor-parallel ranks per dp group, under torchrun (docs/distributed.md; default 1)")
    g.add_argument("--dp", type=positive_int, default=None,
                   help="data-parallel attention groups, under torchrun (default: processes / tp); the routed "
                        "experts split over every process")


def distributed(args: argparse.Namespace) -> bool:
    """Whether this command runs as one of several processes (torchrun, or --tp / --dp given)."""
    from ..parallel import launched

    return bool(args.tp or args.dp) or launched()


def tokenizer_of(model: str):
    """The tokenizer.json next to a checkpoint folder, or None."""
    from pathlib import Path

    from ..tokenizer import Tokenizer

    return Tokenizer.find(model) if Path(model).is_dir() else None


def engine_kwargs(args: argparse.Namespace) -> dict:
    import torch

    set_threads(args.threads)
    args.torch_dtype = getattr(torch, DTYPES[args.dtype])
    return {"max_seqs": args.max_seqs, "max_model_len": args.max_model_len, "prefill_chunk": args.prefill_chunk,
            "speculative": args.speculative, "num_draft_tokens": args.num_draft_tokens, "compile": args.compile,
            "allow_long_context": args.allow_long_context, "kv_dtype": args.kv_dtype}


def resolve_model(model: str | None) -> str:
    """A checkpoint folder or flavor as given; a shipped model's name (None: `demo`) -> its folder."""
    from ..assets import DEFAULT_MODEL, shipped_model

    return str(shipped_model(model or DEFAULT_MODEL) or model)


def check_text(text: str, source: str) -> str:
    """`text` if it is valid Unicode; else a UserError naming `source` and the bytes that are not UTF-8.

    Python hands undecodable bytes of argv (and of stdin read with errors="surrogateescape") over as
    lone surrogates, which the tokenizer refuses with a bare TypeError."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        at = len(text[: e.start].encode("utf-8"))
        try:
            bad = text[e.start : e.end].encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a surrogate that stands for no byte
            bad = text[e.start : e.end].encode("utf-8", "surrogatepass")
        shown = " ".join(f"0x{b:02x}" for b in bad[:8]) + (" ..." if len(bad) > 8 else "")
        raise UserError(f"{source} is not valid UTF-8: byte {at} is {shown}; give UTF-8 text") from None
    return text


def read_text(path: str) -> str:
    """The UTF-8 text of a file, or of stdin for "-", checked as `check_text` does."""
    if path == "-":
        data, source = sys.stdin.buffer.read(), "stdin"
    else:
        data, source = Path(path).read_bytes(), path
    return check_text(data.decode("utf-8", "surrogateescape"), source)


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[list[bool]]:
    """While inside, the first Ctrl-C only sets `flag[0]`, so the caller stops between two engine steps
    and the engine stays consistent; a second Ctrl-C raises KeyboardInterrupt as usual. Outside the
    main thread (where Python takes no signals) the flag never changes."""
    flag = [False]

    def handler(signum, frame):
        flag[0] = True
        signal.signal(signal.SIGINT, previous)

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)
