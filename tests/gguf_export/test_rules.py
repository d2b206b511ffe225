"""Configs llama.cpp's deepseek4 cannot run are refused, each with the field and the reason."""

import pytest
from helpers import mixed_config, random_model

from trillion.flavors import FLAVORS
from trillion.gguf import check_llamacpp_support, llamacpp_problems

gguf = pytest.importorskip("gguf")
from trillion.gguf import export_gguf

OK = {"compress_ratios": (0, 4, 128, 4, 128, 0), "index_head_dim": 64}


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"compress_ratios": (0, 4, 16, 4, 128, 0)}, "compress_ratios has [16]"),
        ({"compress_ratios": (0, 4, 128, 4, 128, 64)}, None),  # the MTP block is not exported
        ({"sparse_ratio": 8}, "sparse_ratio = 8"),
        ({"hc_mult": 2}, "hc_mult = 2"),
        ({"score_func": "sigmoid"}, "score_func = 'sigmoid'"),
        ({"score_func": "softmax"}, "score_func = 'softmax'"),
        ({"index_head_dim": 32}, "index_head_dim = 32"),
        ({"index_head_dim": 96}, "index_head_dim = 96"),
        (
            {"rope_head_dim": 128, "head_dim": 128, "index_head_dim": 64},
            "index_head_dim = 64 < rope_head_dim = 128",
        ),
        (
            {"n_heads": 3, "head_dim": 32, "o_groups": 2, "q_lora_rank": 24},
            "n_heads = 3 is not a multiple of o_groups = 2",
        ),
        ({"n_shared_experts": 0}, "n_shared_experts = 0"),
        ({"beta_fast": 16}, "beta_fast, beta_slow = 16, 1"),
        ({"beta_fast": 16, "original_seq_len": 0}, None),  # no YaRN: the betas are unused
    ],
)
def test_each_rule(changes, reason):
    cfg = mixed_config(**{**OK, **changes})
    problems = llamacpp_problems(cfg)
    if reason is None:
        assert problems == []
        check_llamacpp_support(cfg)
    else:
        assert len(problems) == 1 and reason in problems[0]
        with pytest.raises(ValueError, match="llama.cpp's deepseek4 cannot run this model") as e:
            check_llamacpp_support(cfg)
        assert "\n" not in str(e.value)


def test_every_reason_at_once():
    cfg = mixed_config(
        compress_ratios=(0, 4, 16, 4, 16, 0), index_head_dim=16, hc_mult=2, score_func="sigmoid"
    )
    assert len(llamacpp_problems(cfg)) == 4


def test_flavors():
    """The bench flavors are the ones llama.cpp runs; the demo and tiny flavors are not (HCA 16)."""
    accepted = {name for name, cfg in FLAVORS.items() if not llamacpp_problems(cfg)}
    assert {"bench-94m", "bench-1b", "v4-flash", "v4-pro"} <= accepted
    assert not {"tiny", "demo", "small"} & accepted


def test_export_refuses_before_writing(tmp_path):
    model = random_model(mixed_config(index_head_dim=16), seed=0)
    with pytest.raises(ValueError, match="compress_ratios has"):
        export_gguf(model, tmp_path / "x.gguf")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="type = 'q4_0'"):
        export_gguf(random_model(mixed_config(**OK)), tmp_path / "x.gguf", type="q4_0")
