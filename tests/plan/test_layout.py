"""trillion.parallel.layout.check_layout: every valid mesh accepted, every bad one refused with its reason."""

import pytest

from trillion.flavors import FLAVORS
from trillion.kvcost import V3Config
from trillion.parallel.layout import LayoutError, check_layout, require_layout

TINY = FLAVORS["tiny"]  # 4 heads, 2 output groups, 8 routed experts


@pytest.mark.parametrize("dp,tp", [(1, 1), (2, 1), (1, 2), (4, 2), (8, 1), (4, 1), (2, 2)])
def test_valid_meshes(dp, tp):
    assert check_layout(TINY, dp=dp, tp=tp, world=dp * tp) == []
    require_layout(TINY, dp=dp, tp=tp, world=dp * tp)  # does not raise


def test_each_rule_names_its_reason():
    assert any("world size 6 != dp x tp" in p for p in check_layout(TINY, dp=2, tp=2, world=6))
    assert any("does not divide the 4 attention heads" in p for p in check_layout(TINY, dp=1, tp=3, world=3))
    # 4 heads divide by 4 but the 2 output groups do not
    problems = check_layout(TINY, dp=1, tp=4, world=4)
    assert len(problems) == 1 and "2 output groups" in problems[0]
    assert any("does not divide the 8 routed experts" in p for p in check_layout(TINY, dp=3, tp=1, world=3))
    assert check_layout(TINY, dp=0, tp=1, world=0)[0].startswith("dp = 0")


def test_every_problem_is_listed_at_once():
    problems = check_layout(TINY, dp=1, tp=3, world=5)  # world != dp*tp, heads, groups, experts
    assert len(problems) == 4
    with pytest.raises(LayoutError, match="dp=1 x tp=3") as e:
        require_layout(TINY, dp=1, tp=3, world=5)
    assert str(e.value).count(";") == 3


def test_redundant_experts_count_in_the_division():
    assert check_layout(TINY, dp=12, tp=1, world=12) != []
    assert check_layout(TINY, dp=12, tp=1, world=12, redundant_experts=4) == []  # 12 slots over 12 ranks
    assert "+ 4 redundant" in check_layout(TINY, dp=5, tp=1, world=5, redundant_experts=4)[0]


def test_v3_has_no_output_groups():
    v3 = V3Config()  # 128 heads, 256 routed experts, MLA (no grouped output projection)
    assert check_layout(v3, dp=144, tp=1, world=144, redundant_experts=32) == []  # DeepSeek's decode unit
    assert check_layout(v3, dp=1, tp=8, world=8) == []
    assert check_layout(v3, dp=144, tp=1, world=144) != []  # 256 experts do not split over 144 ranks
