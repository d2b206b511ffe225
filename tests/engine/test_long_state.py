"""The state pool at long context: the release's FP8 / FP4 storage is exactly the model's fake
quantisation, pool bytes equal `trillion kv` part for part, pages are allocated lazily, the default
pool is sized from the model's limit and the machine's memory, and admission refuses with numbers."""

import warnings

import pytest
import torch
from helpers import mixed_config, random_model

from trillion.engine.engine import Engine
from trillion.engine.kvstore import fp4_decode, fp4_encode, fp8_decode, fp8_encode
from trillion.engine.state import MAIN, MTP, StatePool, pool_tokens
from trillion.errors import UserError
from trillion.flavors import FLAVORS
from trillion.formats import fake_quant_fp4, fake_quant_fp8
from trillion.kvcost import GROUPS, PARTS, kv_cost


def _values(seed, shape):
    """Normal values over a wide range of scales, with all-zero, tiny and huge blocks."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * torch.exp2(torch.randint(-30, 30, shape[:-1] + (1,), generator=g).float())
    x[0] = 0
    x[1] = 1e-7 * torch.randn(shape[-1], generator=g)
    x[2, :3] = torch.tensor([448.0 * 2**-8, -3e4, 0.5])
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fp8_storage_is_the_fake_quant_rounding(dtype):
    x = _values(0, (64, 128)).to(dtype)
    codes, scale = fp8_encode(x)
    assert codes.dtype == torch.float8_e4m3fn and scale.dtype == torch.uint8 and scale.shape == (64, 2)
    got = fp8_decode(codes, scale, dtype)
    assert torch.equal(got, fake_quant_fp8(x, block=64))
    assert torch.equal(fp8_decode(*fp8_encode(got), dtype), got)  # a fake-quant model's values: no loss


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fp4_storage_is_the_fake_quant_rounding(dtype):
    x = _values(1, (64, 64)).to(dtype)
    packed, scale = fp4_encode(x)
    assert packed.shape == (64, 32) and scale.shape == (64, 2)
    got = fp4_decode(packed, scale, dtype)
    assert torch.equal(got, fake_quant_fp4(x, block=32))
    assert torch.equal(fp4_decode(*fp4_encode(got), dtype), got)


def test_a_partial_fp8_block_has_its_own_scale():
    """The demo's 48 non-rope dims: one block of 48, scaled like a block of 64 padded with zeros."""
    x = _values(2, (16, 48))
    padded = torch.cat((x, torch.zeros(16, 16)), -1)
    codes, scale = fp8_encode(x)
    assert scale.shape == (16, 1)
    assert torch.equal(fp8_decode(codes, scale, torch.float32), fake_quant_fp8(padded, block=64)[:, :48])


# ---------------------------------------------------------------------------------- bytes


@pytest.mark.parametrize("flavor,n", [("tiny", 4096), ("demo-random", 65536), ("bench-94m", 262144),
                                      ("v4-flash", 1 << 20), ("v4-pro", 1 << 17)])
@pytest.mark.parametrize("kv_dtype,precision", [("fp8", "release"), ("bf16", "bf16")])
def test_pool_bytes_equal_trillion_kv(flavor, n, kv_dtype, precision):
    """One sequence of n tokens (entries filling whole pages, no speculation slack) holds exactly
    what `trillion kv` counts, part by part; the pool is built on `meta` (no memory)."""
    cfg = FLAVORS[flavor]
    ratios = {cfg.ratio(i) for i in range(cfg.n_layers + cfg.n_mtp_layers)} - {0}
    pool = StatePool(cfg, max_seqs=1, max_entries={r: n // r for r in ratios}, page_size=64, device="meta",
                     dtype=torch.bfloat16, kv_dtype=kv_dtype)
    seq = pool.allocate()
    for stack in (MAIN, MTP):
        pool.ensure_pages(seq, stack, n)
    want = getattr(kv_cost(cfg, n, matmul_params=1), precision)
    assert pool.used_bytes() == {p: sum(want[g][p] for g in GROUPS) for p in PARTS}


def test_pool_pages_are_allocated_lazily():
    """A pool addressing ~2 GB adds little to the resident size until its pages are used."""

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    cfg = FLAVORS["bench-94m"]
    before = rss()
    pool = StatePool(cfg, max_seqs=4, max_entries={4: 1 << 22, 128: 1 << 17}, page_size=64, dtype=torch.bfloat16)
    assert pool.nbytes() > 2e9
    assert rss() - before < 2e8
    seq = pool.allocate()
    pool.ensure_pages(seq, MAIN, 1 << 16)  # zeroing the pages handed out makes them resident
    assert pool.used_bytes()["entries"] < rss() - before < 2e8 + 2 * sum(pool.used_bytes().values())


# ---------------------------------------------------------------------------------- sizing and admission


@pytest.fixture(scope="module")
def long_model():
    return random_model(mixed_config(max_seq_len=1 << 20), seed=1)


def test_the_default_pool_takes_a_request_at_the_model_limit(long_model):
    """`LLM(path)` used to refuse a 262,177-token request ("raise kv_cache_tokens"): the pool was
    sized for 8,192 tokens per sequence, whatever the model's limit."""
    eng = Engine(long_model)
    assert eng.max_model_len == 1 << 20
    seqs = eng.add_request(list(range(7)) * (262_177 // 7), None)
    assert eng.pool.can_admit(eng._need(len(seqs[0].prompt_ids), seqs[0].params))


def test_the_pool_is_sized_from_available_memory(long_model):
    cfg = long_model.cfg
    kw = {"max_seqs": 8, "max_model_len": 1 << 20, "kv_dtype": "auto", "dtype": torch.float32, "page_size": 64}
    tokens, why = pool_tokens(cfg, **kw, available=1 << 40)
    assert tokens == 8 << 20 and why == "8 sequences x max_model_len 1048576"
    tokens, why = pool_tokens(cfg, **kw, available=1 << 26)
    assert 0 < tokens < 8 << 20 and "80% of the 67.11 MB of memory available at start" in why
    pool = StatePool(cfg, max_seqs=8, max_entries={4: -(-tokens // 4), 16: -(-tokens // 16)}, device="meta")
    assert 0.8 * (1 << 26) - pool.page_bytes(("main", 4)) <= pool.nbytes()  # what the pool addresses is the
    assert pool.nbytes() <= 0.8 * (1 << 26) + sum(pool.page_bytes(g) for g in pool.groups)  # 80%, to a page


def test_admission_refuses_what_memory_cannot_hold_with_the_numbers(long_model):
    eng = Engine(long_model, max_seqs=2, kv_cache_tokens=4096)
    with pytest.raises(UserError, match=r"a request of 9063 tokens x n = 1 needs .* of compressed attention state; "
                                        r"the pool holds .* \(about 4\d\d\d tokens; sized from kv_cache_tokens = 4096\)"):
        eng.add_request([1] * 8999, None)


def test_past_the_position_limit_only_on_request(long_model):
    model = random_model(mixed_config(max_seq_len=256), seed=1)
    with pytest.raises(UserError, match=r"max_model_len = 1024 exceeds the model's position limit 256 .*"
                                        r"allow_long_context=True"):
        Engine(model, max_model_len=1024)
    with pytest.warns(UserWarning, match="not trained on sequences that long"):
        eng = Engine(model, max_model_len=1024, allow_long_context=True)
    assert eng.max_model_len == 1024
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Engine(model, max_model_len=100).max_model_len == 100
