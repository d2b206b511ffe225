"""Meshes that cannot hold a model are refused, with every reason, before anything loads."""

import pytest
from helpers import mixed_config

from trillion.flavors import FLAVORS
from trillion.parallel import LayoutError, check_layout, init_mesh, load_sharded
from trillion.parallel.layout import split_range


def test_a_mesh_that_fits_has_no_problem():
    cfg = mixed_config(n_routed_experts=8)  # 4 heads, 2 output groups
    assert check_layout(cfg, dp=2, tp=2, world=4) == []
    assert check_layout(cfg, dp=8, tp=1, world=8) == []
    flash = FLAVORS["v4-flash"]  # 64 heads, 8 groups, 256 experts
    assert check_layout(flash, dp=1, tp=8, world=8) == []
    assert check_layout(flash, dp=8, tp=8, world=64) == []


def test_each_reason_is_named():
    cfg = mixed_config(n_routed_experts=6)  # 4 heads, 2 output groups, 6 experts
    problems = check_layout(cfg, dp=1, tp=3, world=3)
    assert len(problems) == 2
    assert "tp = 3 does not divide n_heads = 4" in problems[0]
    assert "tp = 3 does not divide o_groups = 2" in problems[1]
    [problem] = check_layout(cfg, dp=4, tp=1, world=4)
    assert "4 processes do not divide n_routed_experts = 6" in problem
    [problem] = check_layout(cfg, dp=2, tp=1, world=3)
    assert "dp x tp = 2 x 1 = 2, but 3 processes were started" in problem
    assert check_layout(mixed_config(n_heads=8, o_groups=2, n_routed_experts=8), dp=1, tp=4, world=4) == [
        "tp = 4 does not divide o_groups = 2: each tensor-parallel rank holds o_groups / tp output groups of wo_a"
    ]


def test_init_mesh_refuses_before_joining(monkeypatch):
    # No process group exists and no peer is listening: a refusal must come before any rendezvous.
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "1")
    with pytest.raises(LayoutError, match=r"dp=1 x tp=4 mesh: .*tp = 4 does not divide o_groups = 2"):
        init_mesh(1, 4, cfg=mixed_config(), device_type="cpu")
    with pytest.raises(LayoutError, match="dp x tp = 1 x 2 = 2, but 4 processes were started"):
        init_mesh(1, 2, device_type="cpu")


def test_sharded_load_refuses_before_reading(tmp_path):
    """load_sharded checks the checkpoint's config against the mesh first: this folder holds no
    tensors at all, so any read would fail differently."""
    import json

    cfg = mixed_config()  # 6 experts
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_hf_dict()))

    class Mesh:  # the three questions load_sharded asks a DeviceMesh before loading
        def __getitem__(self, dim):
            return type("Dim", (), {"size": lambda self: {"dp": 4, "tp": 1}[dim]})()

        def size(self):
            return 4

    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(LayoutError, match="4 processes do not divide n_routed_experts = 6"):
        load_sharded(tmp_path, Mesh())


def test_split_range_matches_tensor_split():
    import torch

    for n, parts in [(97, 2), (97, 4), (8, 4), (3, 4), (0, 2)]:
        want = [(int(c[0]), int(c[-1]) + 1) if len(c) else None for c in torch.arange(n).tensor_split(parts)]
        got = [split_range(n, parts, i) for i in range(parts)]
        assert [g if g[0] < g[1] else None for g in got] == want
