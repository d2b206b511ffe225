"""Continuous batching under load: 32 concurrent streams each get exactly what they get alone;
state returns to idle afterwards; clients that leave mid-stream cancel their sequences; a full
queue answers 429 with Retry-After at once; /metrics reports it all."""

import asyncio
import logging
import time

import httpx
import openai
import pytest

from .stub import API_KEY, MODEL, wait_idle

AUTH = {"Authorization": f"Bearer {API_KEY}"}
N_CLIENTS = 32


def _prompt(i: int) -> list[int]:
    """Prompts of different lengths (3 to 90 tokens: several prefill chunks for the long ones)."""
    return [(7 * i + 3 * k) % 500 + 2 for k in range(3 + (i * 29) % 88)]


def _request(i: int) -> dict:
    return {"model": MODEL, "prompt": _prompt(i), "max_tokens": 3 + i % 4, "temperature": 0,
                "extra_body": {"return_token_ids": True, "ignore_eos": i % 2 == 0}}


def test_32_concurrent_streams_get_what_they_get_alone(url, service):
    async def main():
        async with openai.AsyncOpenAI(base_url=url + "/v1", api_key=API_KEY, max_retries=0, timeout=120) as client:
            alone = []
            for i in range(N_CLIENTS):  # one at a time: nothing else in the batch
                out = await client.completions.create(**_request(i))
                alone.append((out.choices[0].token_ids, out.choices[0].text))

            async def stream(i):
                ids, text = [], ""
                async for ch in await client.completions.create(**_request(i), stream=True):
                    ids += ch.choices[0].token_ids or []
                    text += ch.choices[0].text
                return ids, text

            together = await asyncio.gather(*(stream(i) for i in range(N_CLIENTS)))
            return alone, together

    peak = []
    alone, together = asyncio.run(_watch(service, main(), peak))
    assert together == alone  # no token lost, duplicated or taken from another stream
    assert max(peak) > 1  # the streams really ran batched
    wait_idle(service)
    eng = service.engine
    assert eng.pool.pages_in_use() == 0 and eng.pool.slots_in_use() == 0 and not eng.waiting
    assert all(v == 0 for v in eng.reserved.values())


async def _watch(service, coro, peak):
    """Run `coro` while sampling how many sequences run together."""
    task = asyncio.ensure_future(coro)
    while not task.done():
        peak.append(len(service.engine.running))
        await asyncio.sleep(0.01)
    return task.result()


def test_client_disconnect_mid_stream_frees_its_state(url, service):
    body = {"model": MODEL, "prompt": _prompt(5), "max_tokens": 200, "temperature": 0, "stream": True,
            "ignore_eos": True}
    for _ in range(3):
        with (
            httpx.Client(base_url=url, headers=AUTH, timeout=30) as http,
            http.stream("POST", "/v1/completions", json=body) as r,
        ):
            assert r.status_code == 200
            lines = r.iter_lines()
            first = next(line for line in lines if line.startswith("data:"))
            assert '"text_completion"' in first
        # the connection is closed: the server notices and cancels the sequence
    wait_idle(service)
    assert _aborted(service) >= 3


class _Errors(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_client_disconnect_while_waiting_for_a_whole_answer(url, service):
    """The client gives up (its timeout closes the connection, as `curl --max-time` does): the
    sequence is aborted, nothing is logged as an error, no 500 is counted."""
    long = {"model": MODEL, "max_tokens": 900, "temperature": 0, "ignore_eos": True}
    requests = [("/v1/completions", dict(long, prompt=_prompt(3))),
                ("/v1/chat/completions", dict(long, messages=[{"role": "user", "content": "hi"}]))]
    aborted, failed = _aborted(service), _count(service, "/v1/completions", "500")
    errors = _Errors()
    loggers = [logging.getLogger(n) for n in ("uvicorn.error", "uvicorn", "trillion.serve")]
    for lg in loggers:
        lg.addHandler(errors)
    try:
        for path, req in requests:
            with httpx.Client(base_url=url, headers=AUTH, timeout=0.5) as http, pytest.raises(httpx.ReadTimeout):
                http.post(path, json=req)
        wait_idle(service)
        time.sleep(0.2)  # the handler's reply (to nobody) is logged and counted after the abort
    finally:
        for lg in loggers:
            lg.removeHandler(errors)
    assert _aborted(service) == aborted + 2
    assert [r.getMessage() for r in errors.records] == []
    assert _count(service, "/v1/completions", "500") == failed == 0
    assert _count(service, "/v1/chat/completions", "500") == 0
    assert _count(service, "/v1/completions", "499") >= 1


def test_full_queue_answers_429_with_retry_after(url, service):
    worker = service.worker
    old = worker.max_queue
    worker.max_queue = 2
    worker.paused.set()  # requests are accepted but nothing runs: the queue fills
    try:
        async def main():
            async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=60) as http:
                body = {"model": MODEL, "prompt": [5, 6, 7], "max_tokens": 2, "temperature": 0}
                queued = [asyncio.ensure_future(http.post("/v1/completions", json=body)) for _ in range(2)]
                while worker.queue_depth() < 2:
                    await asyncio.sleep(0.01)
                t0 = time.monotonic()
                refused = await http.post("/v1/completions", json=body)
                quick = time.monotonic() - t0
                worker.paused.clear()
                return refused, quick, await asyncio.gather(*queued)

        refused, quick, queued = asyncio.run(main())
    finally:
        worker.max_queue = old
        worker.paused.clear()
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1" and quick < 5
    err = refused.json()["error"]
    assert err["type"] == "rate_limit_error" and err["code"] == "queue_full" and "queue is full" in err["message"]
    assert [r.status_code for r in queued] == [200, 200]
    wait_idle(service)


def test_health_and_metrics(url, service):
    assert httpx.get(url + "/health").json() == {"status": "ok"}  # no key needed
    text = httpx.get(url + "/metrics", headers=AUTH).text
    for name in ("trillion_requests_total", "trillion_prompt_tokens_total", "trillion_generation_tokens_total",
                 "trillion_queue_depth", "trillion_running_sequences", "trillion_kv_pages_in_use",
                 "trillion_time_to_first_token_seconds_bucket", "trillion_inter_token_latency_seconds_bucket"):
        assert name in text, name
    assert 'trillion_requests_total{endpoint="/v1/completions",status="200"}' in text
    value = next(line for line in text.splitlines() if line.startswith("trillion_kv_pages_in_use "))
    assert float(value.split()[1]) == service.engine.pool.pages_in_use() == 0


def test_running_streams_keep_flowing_while_a_long_prompt_prefills(service):
    """A 900-token prompt is prefilled 64 tokens per step; a running stream gets a token every step."""
    from trillion.engine.sampling import SamplingParams

    async def main():
        running = await service.generate(_prompt(1), SamplingParams(max_new_tokens=200, temperature=0,
                                                                    ignore_eos=True))
        await running.__anext__()
        long = await service.generate([(5 * k) % 500 + 2 for k in range(900)],
                                      SamplingParams(max_new_tokens=1, temperature=0, ignore_eos=True))
        done = asyncio.ensure_future(long.collect())
        during = 0
        while not done.done():
            during += sum(len(d.token_ids) for d in await running.__anext__())
        running.abort()
        return during

    during = asyncio.run(main())
    assert during >= 900 // 64 - 2  # about one token per prefill chunk of the long prompt
    wait_idle(service)


def _aborted(service) -> float:
    return service.metrics.registry.get_sample_value("trillion_aborted_sequences_total") or 0.0


def _count(service, endpoint: str, status: str) -> float:
    return service.metrics.registry.get_sample_value(
        "trillion_requests_total", {"endpoint": endpoint, "status": status}) or 0.0
