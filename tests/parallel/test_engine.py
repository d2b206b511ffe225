"""The distributed engine (trillion.parallel.engine) in real processes against the single-process engine.

Rank 0 schedules and the dp groups run their own sequences (with tp = 2 and dp = 2 one group may sit
a step out and join the expert exchanges idle); the tokens must be the single-process engine's, token
for token: greedy, seeded sampling with n = 2, log-probabilities to float tolerance, chunked prefill
and a queue (more prompts than max_seqs), with and without MTP speculation.
"""

from __future__ import annotations

import json

import pytest
from helpers import random_model

from tests.parallel import cases
from tests.parallel.launch import check, launch
from trillion.engine import LLM, SamplingParams

RUNS = [(1, 2, ""), (2, 1, ""), (2, 2, ""), (2, 1, "mtp")]  # (dp, tp, speculative)


def single_process(speculative: str):
    llm = LLM(random_model(cases.config()), **cases.ENGINE, speculative=speculative or None, num_draft_tokens=2)
    greedy = llm.generate(cases.prompts(), SamplingParams(max_new_tokens=9, temperature=0))
    sampled = llm.generate(cases.prompts()[:2], SamplingParams(max_new_tokens=6, n=2, seed=7, logprobs=2))
    return {
        "greedy": [o.token_ids for o in greedy],
        "sampled": [[c.token_ids for c in o.outputs] for o in sampled],
        "logprobs": [[[e["logprob"] for e in c.logprobs] for c in o.outputs] for o in sampled],
    }


@pytest.mark.parametrize("dp,tp,speculative", RUNS, ids=lambda v: str(v) or "plain")
def test_distributed_engine_equals_single_process(dp, tp, speculative, tmp_path):
    check(launch(dp * tp, "engine", str(tmp_path), str(dp), str(tp), speculative))
    got = json.loads((tmp_path / "engine.json").read_text())
    want = single_process(speculative)
    assert got["greedy"] == want["greedy"]
    assert got["sampled"] == want["sampled"]
    for g, w in zip(got["logprobs"], want["logprobs"]):
        for a, b in zip(g, w):
            assert a == pytest.approx(b, abs=1e-4)
