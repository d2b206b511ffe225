"""Prometheus metrics of one server (its own registry, so several servers can live in one process).

Counters: requests (by endpoint and HTTP status), prompt and generated tokens, aborted sequences.
Gauges (set by the engine thread after every step): queue depth, running sequences, KV pages and
sequence slots in use, KV pages in total.
Histograms: time to first token, time between tokens of one sequence, whole-request latency.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("trillion_requests", "HTTP requests by endpoint and status", ["endpoint", "status"],
                                registry=r)
        self.prompt_tokens = Counter("trillion_prompt_tokens", "prompt tokens admitted", registry=r)
        self.generation_tokens = Counter("trillion_generation_tokens", "tokens generated", registry=r)
        self.aborted = Counter("trillion_aborted_sequences", "sequences cancelled before their end", registry=r)
        self.queue_depth = Gauge("trillion_queue_depth", "requests waiting for a place in the batch", registry=r)
        self.running = Gauge("trillion_running_sequences", "sequences in the running batch", registry=r)
        self.kv_pages = Gauge("trillion_kv_pages_in_use", "KV cache pages (compressed entries) in use", registry=r)
        self.kv_pages_total = Gauge("trillion_kv_pages_total", "KV cache pages in the pool", registry=r)
        self.slots = Gauge("trillion_sequence_slots_in_use", "sequence state slots (window, partial blocks) in use",
                           registry=r)
        self.ttft = Histogram("trillion_time_to_first_token_seconds", "request arrival to its first token",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.itl = Histogram("trillion_inter_token_latency_seconds", "time between two tokens of one sequence",
                             buckets=TOKEN_BUCKETS, registry=r)
        self.latency = Histogram("trillion_request_latency_seconds", "request arrival to its last token",
                                 buckets=LATENCY_BUCKETS, registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
