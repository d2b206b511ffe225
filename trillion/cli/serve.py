"""`trillion serve`: an OpenAI-compatible HTTP server over a model (see docs/serving.md)."""

from __future__ import annotations

import argparse
import os

from ..errors import UserError
from .common import DTYPES, add_mesh_args, add_threads_arg, distributed, resolve_model


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 1 to 65535 (a one-line usage error otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, got {value}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API",
                       description="Serve /v1/completions, /v1/chat/completions, /v1/models, /tokenize, "
                                   "/detokenize, /version, /health and /metrics (docs/serving.md). Without "
                                   "--model, the demo model shipped with trillion.")
    p.add_argument("--model", help="checkpoint folder or flavor name (default: the shipped demo model)")
    p.add_argument("--tokenizer", help="tokenizer.json (default: the one in the checkpoint folder)")
    p.add_argument("--served-model-name", help="the model id clients send (default: the folder or flavor name)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: localhost only)")
    p.add_argument("--port", type=port_number, default=8000, help="port to listen on (1-65535)")
    p.add_argument("--api-key", default=os.environ.get("TRILLION_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on every endpoint but /health "
                        "(default: $TRILLION_API_KEY)")
    p.add_argument("--max-seqs", "--max-num-seqs", "--max-batch", dest="max_batch", type=int, default=8,
                   help="sequences decoded together (--max-num-seqs: vLLM's name; --max-batch: the old one)")
    p.add_argument("--max-queue", type=int, default=64, help="requests waiting beyond the batch before 429")
    p.add_argument("--max-model-len", type=int, default=None, help="prompt + new tokens limit")
    p.add_argument("--max-body-bytes", type=int, default=16 * 2**20, help="request body size limit")
    p.add_argument("--default-max-tokens", type=int, default=None,
                   help="new tokens of a chat answer whose request sets no max_tokens (default: the model "
                        "folder's generation_config.json max_new_tokens, else 4096; always within the context)")
    g = p.add_argument_group("engine")
    g.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="compute dtype")
    g.add_argument("--prefill-chunk", type=int, default=512, help="prompt tokens per prefill step")
    g.add_argument("--speculative", choices=["mtp"], default=None, help="self-speculative decoding with the MTP block")
    g.add_argument("--num-draft-tokens", type=int, default=1, help="draft tokens per speculative step")
    add_mesh_args(g)
    add_threads_arg(g)
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="default: eager (TRILLION_COMPILE=auto: the decode step compiles in the background, cached "
                        "on disk, while it runs eagerly); --compile: compile it and the prefill stages before "
                        "use (minutes, then cached); --no-compile: eager")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..serve import load_service

    for name, flag in (("max_batch", "max-seqs"), ("max_queue", "max-queue"), ("max_body_bytes", "max-body-bytes"),
                       ("prefill_chunk", "prefill-chunk"), ("default_max_tokens", "default-max-tokens")):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserError(f"--{flag} must be >= 1, got {getattr(args, name)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    model, dtype = resolve_model(args.model), getattr(torch, DTYPES[args.dtype])
    engine_options = {"max_model_len": args.max_model_len, "prefill_chunk": args.prefill_chunk,
                      "speculative": args.speculative, "num_draft_tokens": args.num_draft_tokens,
                      "compile": args.compile}
    if distributed(args):  # one of several processes: rank 0 serves HTTP, the others follow its steps
        from ..parallel.launch import running, start

        engine = start(model, tp=args.tp, dp=args.dp, dtype=dtype, max_seqs=args.max_batch, **engine_options)
        with running(engine) as leader:
            if leader:
                return serve_service(args, load_service(model, engine=engine, **service_options(args)))
        return 0
    service = load_service(model, max_batch=args.max_batch, dtype=dtype, **engine_options, **service_options(args))
    return serve_service(args, service)


def service_options(args: argparse.Namespace) -> dict:
    return {"tokenizer": args.tokenizer, "model_name": args.served_model_name, "max_queue": args.max_queue,
            "default_max_tokens": args.default_max_tokens}


def serve_service(args: argparse.Namespace, service) -> int:
    from ..serve import serve

    if service.tokenizer is None:
        print("trillion serve: no tokenizer: only token-id prompts on /v1/completions will work")
    print(f"trillion serve: {service.model_name!r} on http://{args.host}:{args.port}/v1 "
          f"(max seqs {args.max_batch}, max queue {args.max_queue}, context {service.max_model_len}, "
          f"chat max_tokens default {service.default_max_tokens})")
    serve(service, host=args.host, port=args.port, api_key=args.api_key, log_level=args.log_level,
          max_body_bytes=args.max_body_bytes)
    return 0
