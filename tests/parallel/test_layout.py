"""Meshes that cannot hold a model are refused, with every reason, before anything loads
(check_layout's own cases: tests/plan/test_layout.py)."""

import pytest
from helpers import mixed_config

from trillion.parallel import LayoutError, init_mesh, load_sharded
from trillion.parallel.shards import split_range


def test_init_mesh_refuses_before_joining(monkeypatch):
    # No process group exists and no peer is listening: a refusal must come before any rendezvous.
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "1")
    with pytest.raises(LayoutError, match=r"dp=1 x tp=4 .*tp = 4 does not divide the 2 output groups"):
        init_mesh(1, 4, cfg=mixed_config(), device_type="cpu")
    with pytest.raises(LayoutError, match=r"world size 4 != dp x tp = 1 x 2 = 2"):
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
    with pytest.raises(LayoutError, match="world size 4 does not divide the 6 routed experts"):
        load_sharded(tmp_path, Mesh())


def test_split_range_matches_tensor_split():
    import torch

    for n, parts in [(97, 2), (97, 4), (8, 4), (3, 4), (0, 2)]:
        want = [(int(c[0]), int(c[-1]) + 1) if len(c) else None for c in torch.arange(n).tensor_split(parts)]
        got = [split_range(n, parts, i) for i in range(parts)]
        assert [g if g[0] < g[1] else None for g in got] == want
