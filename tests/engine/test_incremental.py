"""Incremental decoding over V4's state equals the full-sequence forward.

Window wrap-around (70 tokens, window 8), compression block boundaries (ratios 4 and 16, lengths
that are not multiples), CSA top-k changes (index_topk 3 of up to 17 entries), every layer type,
chunked prefill of any size, batches of sequences at different positions, and the MTP block.
"""

import pytest
import torch
from helpers import SAME_WEIGHTS_LOGITS, assert_same_weights, mixed_config, random_model

from trillion.engine.runner import ModelRunner
from trillion.engine.state import StatePool

T = 70
TOL = 1e-4


def _setup(cfg=None, seed=0, **pool_kw):
    cfg = cfg or mixed_config()
    model = random_model(cfg, seed=seed)
    ids = torch.randint(0, cfg.vocab_size, (3, T), generator=torch.Generator().manual_seed(seed + 11))
    with torch.no_grad():
        full, hidden = model(ids, return_hidden=True)
    pool = StatePool(cfg, max_seqs=4, page_size=pool_kw.pop("page_size", 4), **pool_kw)
    return cfg, model, ids, full, hidden, pool, ModelRunner(model, pool)


@pytest.mark.parametrize("cfg", [mixed_config(), mixed_config(index_n_heads=1, index_topk=2)],
                         ids=["tie-free", "indexer-ties"])
def test_every_decode_step_equals_the_full_forward(cfg):
    cfg, _model, ids, full, _, pool, run = _setup(cfg)
    seq = pool.allocate()
    logits, _ = run.forward(ids[:1, :5], [seq])
    assert (logits - full[:1, :5]).abs().max() <= TOL
    for t in range(5, T):
        logits, _ = run.forward(ids[:1, t : t + 1], [seq])
        assert (logits[0, 0] - full[0, t]).abs().max() <= TOL, f"position {t}"


@pytest.mark.parametrize("chunk", [1, 3, 8, 13, 64, T])
def test_chunked_prefill_equals_one_shot(chunk):
    _, _, ids, full, _, pool, run = _setup()
    seq = pool.allocate()
    got = torch.cat([run.forward(ids[1:2, s : s + chunk], [seq])[0] for s in range(0, T, chunk)], dim=1)
    assert (got - full[1:2]).abs().max() <= TOL


@pytest.mark.parametrize("chunk,dense", [(3, True), (8, False)], ids=["3-dense", "8-op"])
def test_short_steps_in_the_graphs_shapes_equal_the_full_forward(chunk, dense):
    """Steps of a few tokens (MTP drafts and speculative checks) as the compiled graph runs them:
    padded page tables, a fixed number of entries pooled, the in-graph expert strategies (every
    expert weighted, or the opaque op), run eagerly."""
    from trillion.engine.experts import InGraph, stack_experts

    _, model, ids, full, _, pool, _ = _setup()
    run = ModelRunner(model, pool, max_model_len=T + 8, static=True,
                      experts=InGraph(model, stack_experts(model), dense=dense))
    seqs = [pool.allocate() for _ in range(2)]
    got = torch.cat([run.forward(ids[:2, s : s + chunk], seqs)[0] for s in range(0, T, chunk)], dim=1)
    assert (got - full[:2]).abs().max() <= TOL


def test_a_batch_equals_its_sequences_run_alone():
    _, _, ids, full, _, pool, run = _setup()
    seqs = [pool.allocate() for _ in range(3)]
    starts = [9, 30, 17]  # different positions in one batch
    for b, (s, n) in enumerate(zip(seqs, starts)):
        run.forward(ids[b : b + 1, :n], [s])
    for step in range(T - max(starts)):
        tok = torch.stack([ids[b, n + step : n + step + 1] for b, n in enumerate(starts)])
        logits, _ = run.forward(tok, seqs)
        for b, n in enumerate(starts):
            assert (logits[b, 0] - full[b, n + step]).abs().max() <= TOL, (b, n + step)


def test_equal_chunks_of_several_sequences_in_one_batch():
    _, _, ids, full, _, pool, run = _setup()
    seqs = [pool.allocate() for _ in range(3)]
    for s in range(0, T, 10):
        logits, _ = run.forward(ids[:, s : s + 10], seqs)
        assert (logits - full[:, s : s + 10]).abs().max() <= TOL


def test_mtp_stack_equals_the_full_mtp_block():
    _cfg, model, ids, _, hidden, pool, run = _setup()
    with torch.no_grad():
        want = model.mtp_logits(hidden[:1, :-1], ids[:1, 1:])  # [1, T-1, V]
    seq = pool.allocate()
    got = [run.mtp(hidden[:1, :20], ids[:1, 1:21], [seq])[0]]
    for t in range(20, T - 1):
        got.append(run.mtp(hidden[:1, t : t + 1], ids[:1, t + 1 : t + 2], [seq])[0])
    assert (torch.cat(got, dim=1) - want).abs().max() <= TOL


def test_state_returns_to_the_pool():
    _, _, ids, _, _, pool, run = _setup()
    idle_pages = pool.pages_in_use()
    seqs = [pool.allocate() for _ in range(3)]
    run.forward(ids[:, :50], seqs)
    assert pool.pages_in_use() > idle_pages and pool.slots_in_use() == 3
    for s in seqs:
        pool.release(s)
    assert pool.pages_in_use() == idle_pages and pool.slots_in_use() == 0


@pytest.mark.parametrize("cfg,static", [(mixed_config(), False), (mixed_config(index_n_heads=1, index_topk=2), False),
                                        (mixed_config(), True)], ids=["tie-free", "indexer-ties", "branch-free"])
def test_decode_fast_path_equals_the_runner(cfg, static):
    cfg, model, ids, full, _, pool, run = _setup(cfg)
    dec = ModelRunner(model, pool, max_model_len=T + 8, static=static)  # static: the graph's shapes
    _decode_against_full(dec, ids, full, pool, run, [1, 13, 24])


def _decode_against_full(dec, ids, full, pool, run, starts):
    """Prefill each sequence to its start with the runner, then decode with `dec` to the end."""
    seqs = [pool.allocate() for _ in starts]
    for b, (s, n) in enumerate(zip(seqs, starts)):
        run.forward(ids[b : b + 1, :n], [s])
    for step in range(T - max(starts)):
        tok = torch.stack([ids[b, n + step : n + step + 1] for b, n in enumerate(starts)])
        logits, _ = dec.forward(tok, seqs)
        for b, n in enumerate(starts):
            assert (logits[b, 0] - full[b, n + step]).abs().max() <= TOL, (b, n + step)


@pytest.mark.parametrize("starts,dense", [([5], False), ([1, 13, 24], False), ([1, 13, 24], True)],
                         ids=["one-sequence", "batch-op", "batch-dense"])
def test_decode_paths_of_the_compiled_graph_run_eagerly(starts, dense):
    """The graph's routed-expert paths (stacked weights indexed in the graph for one sequence; for a
    batch the opaque op, or every expert weighted in the graph) and its branch-free state updates,
    run without compiling."""
    from trillion.engine.experts import InGraph, stack_experts, stack_moe

    _, model, ids, full, _, pool, run = _setup()
    before = [[e.w1.weight.clone() for e in blk.ffn.experts] for blk in model.layers]
    experts = InGraph(model, stack_experts(model), dense=dense)
    dec = ModelRunner(model, pool, max_model_len=T + 8, static=True, experts=experts)
    for blk, ws in zip(model.layers, before):  # the experts' weights are now views of the stacks
        for e, (expert, w) in enumerate(zip(blk.ffn.experts, ws)):
            assert torch.equal(expert.w1.weight, w)
            assert expert.w1.weight.data_ptr() == experts.stacks[blk.layer][0][1]["weight"][e].data_ptr()
    again = [stack_moe(blk.ffn)[1][1]["weight"].data_ptr() for blk in model.layers]
    assert again == [s[1][1]["weight"].data_ptr() for s in experts.stacks[: len(model.layers)]]
    _decode_against_full(dec, ids, full, pool, run, starts)


@pytest.mark.slow
def test_a_compiled_decode_step_writes_its_state_in_place(monkeypatch):
    """The window and compressor rings a step writes are updated where they are: after inductor's
    reinplacing pass no functional write to a graph input is left (each one is a copy of the whole
    ring into a temporary and back, every step; it happened when inductor moved a ring's read past
    the step's write to it). The pass is wrapped to look at the graph it leaves."""
    from torch._inductor.fx_passes import post_grad

    from trillion.engine.experts import InGraph, stack_experts

    graphs, copied = [], []
    reinplace = post_grad.reinplace_inplaceable_ops

    def checked(fake_tensor_updater, graph):
        reinplace(fake_tensor_updater, graph)
        graphs.append(graph)
        copied.extend(n.args[0].name for n in graph.nodes
                      if n.target is torch.ops.aten.index_put.default and n.args[0].op == "placeholder")

    monkeypatch.setattr(post_grad, "reinplace_inplaceable_ops", checked)
    cfg = mixed_config()
    model = random_model(cfg, seed=0)
    pool = StatePool(cfg, max_seqs=4, page_size=4)
    ids = torch.randint(0, cfg.vocab_size, (1, 24), generator=torch.Generator().manual_seed(5))
    dec = ModelRunner(model, pool, max_model_len=T, compile=True, experts=InGraph(model, stack_experts(model)))
    seq = pool.allocate()
    ModelRunner(model, pool).forward(ids[:, :20], [seq])
    with torch._inductor.config.patch(force_disable_caches=True):  # compile here, not from the disk cache
        logits, _ = dec.forward(ids[:, 20:21], [seq])
    assert graphs and copied == []
    with torch.no_grad():
        assert (logits[0, 0] - model(ids[:, :21])[0, -1]).abs().max() <= TOL


@pytest.mark.slow
@pytest.mark.parametrize("starts,dense", [([5], True), ([1, 13, 24], True), ([1, 13, 24], False)],
                         ids=["one-sequence", "batch-dense", "batch-op"])
def test_compiled_decode_equals_the_full_forward(starts, dense):
    from trillion.engine.experts import InGraph, stack_experts

    _, model, ids, full, _, pool, run = _setup()
    # dense: mixed_config's 6 experts would take the dense path by default
    experts = InGraph(model, stack_experts(model), dense=dense)
    dec = ModelRunner(model, pool, max_model_len=T + 8, compile=True, experts=experts)
    _decode_against_full(dec, ids, full, pool, run, starts)


def test_a_model_with_stacked_experts_saves_and_loads(tmp_path):
    from trillion.checkpoint import load_model, save_model
    from trillion.engine.experts import stack_experts

    _, model, ids, full, _, _, _ = _setup()
    stack_experts(model)
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert_same_weights(loaded, model)  # the stacks' views are saved as the experts' own tensors
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), full, **SAME_WEIGHTS_LOGITS)


def test_quantized_experts_run_in_the_graph_path():
    """Stacked int8 experts (codes and scales as views of stacks) through routed_one equal the
    quantised model's own full forward."""
    from trillion.engine.experts import InGraph, stack_experts
    from trillion.quant import quantize_model

    _, model, ids, _, _, pool, run = _setup()
    model = quantize_model(model, "int8", inplace=False)
    for m in model.modules():  # float32 activations: the kernels' exact variant (bf16 would blur 1e-4)
        if hasattr(m, "set_kernel_dtype"):
            m.set_kernel_dtype(torch.float32)
    with torch.no_grad():
        full = model(ids)
    run.model = model
    experts = InGraph(model, stack_experts(model))
    dec = ModelRunner(model, pool, max_model_len=T + 8, static=True, experts=experts)
    assert all(st is not None and "qweight" in st[0][1] for st in experts.stacks)
    _decode_against_full(dec, ids, full, pool, run, [5])


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["int8", "int4-g32"])
def test_compiled_decode_of_a_quantised_model_equals_its_full_forward(scheme):
    """aten's int8 / int4 kernels inside the compiled graph: on the stacked experts' views, and int4's
    grouped wo_a (per-group scales cut in the graph) through the opaque op."""
    from trillion.engine.experts import InGraph, stack_experts
    from trillion.quant import quantize_model

    # widths int4 (groups of 32) takes everywhere
    _, model, ids, _, _, pool, run = _setup(mixed_config(q_lora_rank=32, o_lora_rank=32, moe_inter_dim=32))
    model = quantize_model(model, scheme, inplace=False)
    for m in model.modules():  # float32 activations: the kernels' exact variant
        if hasattr(m, "set_kernel_dtype"):
            m.set_kernel_dtype(torch.float32)
    with torch.no_grad():
        full = model(ids)
    run.model = model
    dec = ModelRunner(model, pool, max_model_len=T + 8, compile=True, experts=InGraph(model, stack_experts(model)))
    _decode_against_full(dec, ids, full, pool, run, [5])


def test_the_expert_op_registry_does_not_keep_models_alive():
    import gc
    import weakref

    from trillion.engine import experts as ops

    cfg, model, _, _, _, _, run = _setup()
    x, w, idx = torch.randn(2, cfg.dim), torch.rand(2, 2), torch.tensor([[0, 1], [1, 2]])
    key = ops.register_moe(model.layers[-1].ffn)
    assert ops.register_moe(model.layers[-1].ffn) == key
    with torch.no_grad():
        assert torch.equal(ops.routed_experts(x, w, idx, key), model.layers[-1].ffn.routed(x, w, idx))
    ref = weakref.ref(model)
    del model, run
    gc.collect()
    assert ref() is None
    with pytest.raises(RuntimeError, match="no longer exists"):
        ops.routed_experts(x, w, idx, key)
