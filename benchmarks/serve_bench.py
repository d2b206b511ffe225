"""Throughput and latency of `trillion serve` at 1, 8 and 32 concurrent streaming clients.

    python benchmarks/serve_bench.py                              # starts `trillion serve --model tiny`
    python benchmarks/serve_bench.py --model small --concurrency 1 8 32 --write-docs docs/serving.md
    python benchmarks/serve_bench.py --url http://127.0.0.1:8000 --model-name my-model

Without --url the server runs in its own process (`python -m trillion.cli serve`), so the client's
Python does not compete with the engine for the GIL. Each of C clients sends --requests streaming
/v1/completions requests one after another (a closed loop): a prompt of --prompt-len random token
ids, --max-tokens greedy tokens with the end token ignored, so every request makes the same work.
Measured on the client: time to first token (request sent -> first token's event), inter-token
latency (gaps between token events of one stream, spread evenly over the tokens of an event),
output tokens/s over the whole run, requests/s. Prints a markdown table; --write-docs puts it
between the `<!-- serve-bench -->` markers of a docs file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

MARK_START, MARK_END = "<!-- serve-bench:start -->", "<!-- serve-bench:end -->"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "trillion.cli", "serve", "--model", args.model, "--port", str(port),
           "--max-seqs", str(max(args.concurrency)), "--max-queue", "1024", "--log-level", "warning",
           "--max-model-len", str(args.prompt_len + args.max_tokens + 8)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.Popen(cmd, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise SystemExit("the server did not come up within 300 s")


async def one_request(http: httpx.AsyncClient, body: dict) -> tuple[float, list[float], int]:
    """(time to first token, inter-token gaps, tokens) of one streaming request."""
    t0 = time.perf_counter()
    first, last, gaps, tokens = None, None, [], 0
    async with http.stream("POST", "/v1/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(chunk["error"]["message"])
            k = sum(len(c.get("token_ids") or []) for c in chunk["choices"])
            if not k:
                continue
            now = time.perf_counter()
            if first is None:
                first = now - t0
            else:
                gaps += [(now - last) / k] * k
            last, tokens = now, tokens + k
    return first, gaps, tokens


async def run_level(url: str, args, clients: int, headers: dict) -> dict:
    rng = random.Random(clients)
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600, limits=limits) as http:
        def body():
            prompt = [rng.randrange(2, 400) for _ in range(args.prompt_len)]
            return {"model": args.model_name or args.model, "prompt": prompt,
                    "max_tokens": args.max_tokens, "temperature": 0, "ignore_eos": True, "stream": True,
                    "return_token_ids": True}

        await one_request(http, body())  # warm-up (first-call costs)

        async def client():
            return [await one_request(http, body()) for _ in range(args.requests)]

        t0 = time.perf_counter()
        results = [r for rs in await asyncio.gather(*(client() for _ in range(clients))) for r in rs]
        wall = time.perf_counter() - t0
    ttft = [r[0] for r in results]
    itl = [g for r in results for g in r[1]]
    tokens = sum(r[2] for r in results)
    q = lambda xs, p: statistics.quantiles(xs, n=100)[p - 1] if len(xs) > 1 else xs[0]
    return {"clients": clients, "requests": len(results), "tok_s": tokens / wall, "req_s": len(results) / wall,
            "ttft_p50": q(ttft, 50), "ttft_p95": q(ttft, 95), "itl_p50": q(itl, 50), "itl_p95": q(itl, 95)}


def table(rows: list[dict], args) -> str:
    head = (f"model `{args.model}`, prompt {args.prompt_len} tokens, {args.max_tokens} new tokens (greedy), "
            f"{args.requests} requests per client, streaming /v1/completions\n\n"
            "| clients | requests | output tok/s | req/s | TTFT p50 | TTFT p95 | inter-token p50 | inter-token p95 |\n"
            "|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    ms = lambda s: f"{s * 1000:.0f} ms"
    return head + "".join(
        f"| {r['clients']} | {r['requests']} | {r['tok_s']:.1f} | {r['req_s']:.2f} | {ms(r['ttft_p50'])} | "
        f"{ms(r['ttft_p95'])} | {ms(r['itl_p50'])} | {ms(r['itl_p95'])} |\n" for r in rows)


def write_docs(path: Path, text: str) -> None:
    doc = path.read_text()
    if MARK_START not in doc or MARK_END not in doc:
        raise SystemExit(f"{path} has no {MARK_START} ... {MARK_END} section")
    a, rest = doc.split(MARK_START, 1)
    _, b = rest.split(MARK_END, 1)
    path.write_text(f"{a}{MARK_START}\n{text}{MARK_END}{b}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny", help="flavor or checkpoint folder to serve (default tiny)")
    p.add_argument("--url", help="benchmark a running server instead of starting one")
    p.add_argument("--model-name", help="model id to send (default: --model)")
    p.add_argument("--api-key", default=os.environ.get("TRILLION_API_KEY"))
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--requests", type=int, default=4, help="requests per client")
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=None, help="torch threads of the started server")
    p.add_argument("--write-docs", type=Path, help="put the table into this markdown file")
    args = p.parse_args()
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    proc, url = (None, args.url) if args.url else start_server(args)
    try:
        rows = []
        for c in args.concurrency:
            rows.append(asyncio.run(run_level(url, args, c, headers)))
            print(f"{c} clients: {rows[-1]['tok_s']:.1f} tok/s", file=sys.stderr)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    text = table(rows, args)
    print(text)
    if args.write_docs:
        write_docs(args.write_docs, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
