"""The parallel model on (dp, tp) meshes of real processes (gloo, CPU) against the single-process model.

One launch per mesh runs every check (launching is the slow part); the tests below read what the
ranks wrote. float32 throughout; logits must agree to 1e-5.
"""

from __future__ import annotations

import pytest
import torch
from helpers import random_model
from safetensors.torch import load_file

from tests.parallel import cases
from tests.parallel.launch import check, launch
from trillion.checkpoint import load_model

TOL = {"atol": 1e-5, "rtol": 0}


@pytest.fixture(scope="module", params=cases.MESHES, ids=lambda m: f"dp{m[0]}-tp{m[1]}")
def ranks(request, tmp_path_factory, hf_folder, official_folder):
    dp, tp = request.param
    out = tmp_path_factory.mktemp(f"dp{dp}tp{tp}")
    check(launch(dp * tp, "model", str(out), str(dp), str(tp), str(hf_folder), str(official_folder)))

    def read(name: str) -> list[dict[str, torch.Tensor]]:
        return [load_file(str(out / f"{name}.rank{r}.safetensors")) for r in range(dp * tp)]

    return dp, tp, read


def groups(dp: int, tp: int):
    """(dp group, rank) of every rank."""
    return [(r // tp, r) for r in range(dp * tp)]


@pytest.fixture(scope="module")
def reference():
    return random_model(cases.config())


@torch.no_grad()
def test_logits_and_mtp_equal_single_process(ranks, reference):
    dp, tp, read = ranks
    got = read("forward")
    for g, r in groups(dp, tp):
        ids = cases.dp_part(cases.tokens(), dp, g)
        logits, hidden = reference(ids, return_hidden=True)
        mtp = reference.mtp_logits(hidden[:, :-1], ids[:, 1:])
        assert got[r]["logits"].shape == logits.shape
        torch.testing.assert_close(got[r]["logits"], logits, **TOL)
        torch.testing.assert_close(got[r]["mtp"], mtp, **TOL)


@torch.no_grad()
def test_uneven_expert_loads(ranks):
    dp, tp, read = ranks
    skewed = cases.skew(random_model(cases.config()))
    got = read("skewed")
    ids = cases.tokens()
    for g, r in groups(dp, tp):
        part = cases.dp_part(ids, dp, g)
        if g == 0:
            torch.testing.assert_close(got[r]["first"], skewed(part[:1, :11]), **TOL)
        torch.testing.assert_close(got[r]["single"], skewed(part[:1, :1]), **TOL)
    # the skew is real: the score-routed layers send every token to experts 0 and 1
    h = skewed.layers[2].ffn_norm(torch.randn(5, skewed.cfg.dim))
    assert set(skewed.layers[2].ffn.gate(h)[1].flatten().tolist()) == {0, 1}


@torch.no_grad()
def test_engine_pieces_on_the_parallel_model(ranks, reference):
    """ModelRunner (chunked prefill, a decode step, the MTP block) drives the parallel model through
    its pieces (Attention.queries/keys/output, Compressor, Indexer, MoE.gate / routed ...)."""
    dp, tp, read = ranks
    got = read("engine")
    for g, r in groups(dp, tp):
        ids = cases.dp_part(cases.tokens(), dp, g)
        logits, hidden = reference(ids, return_hidden=True)
        torch.testing.assert_close(got[r]["logits"], logits, **TOL)
        torch.testing.assert_close(got[r]["mtp"], reference.mtp_logits(hidden[:, :-1], ids[:, 1:]), **TOL)


# ------------------------------------------------------------------------------ sharded loading


def expected_part(full: dict[str, torch.Tensor], cfg, name: str, tp: int, world: int, rank: int) -> torch.Tensor:
    """The part of the full model's tensor that rank `rank` must hold under local name `name`, written
    out from the layout (heads, groups, vocabulary, experts) rather than taken from trillion.parallel."""
    tp_rank, per_rank = rank % tp, cfg.n_routed_experts // world
    parts = name.split(".")
    if "experts" in parts:  # local expert j is global expert rank * per_rank + j
        i = parts.index("experts") + 1
        parts[i] = str(rank * per_rank + int(parts[i]))
    t = full[".".join(parts)]
    leaf = name.rsplit(".", 2)
    heads = torch.arange(cfg.n_heads).tensor_split(tp)[tp_rank]
    groups = torch.arange(cfg.o_groups).tensor_split(tp)[tp_rank]
    if tp == 1:
        return t
    if name in ("embed.weight", "head.weight"):
        return t[torch.arange(cfg.vocab_size).tensor_split(tp)[tp_rank]]
    if name.endswith("attn.attn_sink"):
        return t[heads]
    module, kind = leaf[-2:] if len(leaf) > 1 else ("", "")  # e.g. ("wq_b", "weight") or ("wq_b", "scale")
    if ".attn." not in name or module not in ("wq_b", "wo_a", "wo_b") or ".indexer." in name:
        return t
    if module == "wq_b":
        rows = (heads[:, None] * cfg.head_dim + torch.arange(cfg.head_dim)).flatten()
    else:
        rows = (groups[:, None] * cfg.o_lora_rank + torch.arange(cfg.o_lora_rank)).flatten()
    if kind == "scale":  # one scale per 128 x 128 block (whole blocks at this config)
        rows = rows[::128] // 128
    if module == "wo_b":
        return t[:, rows]
    return t[rows]


@torch.no_grad()
@pytest.mark.parametrize("name", ["load_hf", "load_official", "load_release"])
def test_sharded_loading_gives_each_rank_its_part(ranks, hf_folder, official_folder, name):
    dp, tp, read = ranks
    world = dp * tp
    folder, quantize = {"load_hf": (hf_folder, None), "load_official": (official_folder, None),
                        "load_release": (official_folder, "v4-release")}[name]
    single = load_model(folder, quantize=quantize)
    full = single.state_dict()
    got = read(name)
    per_rank = single.cfg.n_routed_experts // world
    for r in range(world):
        state = {k: v for k, v in got[r].items() if k != "logits"}
        n_expert_keys = sum(".ffn.experts." in k for k in full)
        assert sum(".ffn.experts." in k for k in state) == n_expert_keys // world
        assert len(state) == len(full) - n_expert_keys + n_expert_keys // world
        for k, v in state.items():
            want = expected_part(full, single.cfg, k, tp, world, r)
            assert v.dtype == want.dtype and v.shape == want.shape, (k, v.shape, want.shape)
            assert torch.equal(v.view(torch.uint8) if v.dtype.itemsize == 1 else v,
                               want.view(torch.uint8) if want.dtype.itemsize == 1 else want), k
        assert per_rank * world == single.cfg.n_routed_experts
    if name != "load_hf":  # the loaded parts also run: logits equal the single-process load's
        for g, r in groups(dp, tp):
            ids = cases.dp_part(cases.tokens(single.cfg), dp, g)
            torch.testing.assert_close(got[r]["logits"], single(ids), **TOL)
