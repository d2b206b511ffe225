"""`torchrun --nproc-per-node 2 -m trillion serve --dp 2` (real processes, gloo) answers the official
OpenAI client with the single-process engine's greedy tokens, then stops with its followers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from helpers import mixed_config, random_model

from tests.parallel.launch import ROOT, free_port
from trillion.checkpoint import save_model
from trillion.engine import LLM, SamplingParams

openai = pytest.importorskip("openai")


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited {proc.returncode}:\n{proc.stdout.read()[-4000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError("the server did not come up")


def test_openai_client_against_torchrun_serve(tmp_path):
    model = random_model(mixed_config(n_routed_experts=8))
    folder = save_model(model, tmp_path / "ckpt")
    port = free_port()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
           "-m", "trillion", "serve", "--model", str(folder), "--dp", "2", "--port", str(port), "--max-seqs", "2",
           "--log-level", "warning"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        client = openai.OpenAI(base_url=url + "/v1", api_key="none")
        prompts = [[1, 5, 9, 2], [7, 3], [4, 4, 8, 1, 6, 2, 3]]  # three requests over two dp groups of 2 seqs
        got = [client.completions.create(model="ckpt", prompt=p, max_tokens=7, temperature=0,
                                         extra_body={"return_token_ids": True, "ignore_eos": True}) for p in prompts]
        single = LLM(model, max_seqs=2).generate(prompts, SamplingParams(max_new_tokens=7, temperature=0, ignore_eos=True))
        assert all(c.choices[0].finish_reason == "length" and c.usage.completion_tokens == 7 for c in got), got
        assert [c.choices[0].model_extra["token_ids"] for c in got] == [o.token_ids for o in single]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
