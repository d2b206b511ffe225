"""One server for all serve tests (session scope): a tiny random model behind the real app."""

import pytest
from helpers import random_model

from trillion.serve import ServerThread, Service, create_app

from .stub import API_KEY, CFG, MAX_BODY, MODEL, SCRIPTS, ScriptedEngine, byte_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return byte_tokenizer()


@pytest.fixture(scope="session")
def server(tokenizer):
    """(base url, service) of a running server; requests need the API key."""
    model = random_model(CFG, seed=7)
    engine = ScriptedEngine(model, tokenizer, SCRIPTS, max_seqs=8, max_model_len=1024, prefill_chunk=64, page_size=4)
    service = Service(engine, tokenizer, model_name=MODEL, max_queue=64)
    with ServerThread(create_app(service, api_key=API_KEY, max_body_bytes=MAX_BODY)) as url:
        yield url, service


@pytest.fixture(scope="session")
def url(server):
    return server[0]


@pytest.fixture(scope="session")
def service(server):
    return server[1]
