"""Published V3/R1 serving figures sit below the bounds planned for the same model, hardware and layout."""

import pytest

from trillion.parallel.layout import check_layout
from trillion.plan.costs import v3_costs
from trillion.plan.published import PUBLISHED, compare

BY_KEY = {p.key: p for p in PUBLISHED}


@pytest.mark.parametrize("key", list(BY_KEY))
def test_published_figure_sits_below_the_planned_bound(key):
    c = compare(BY_KEY[key])
    pub = c.published
    print(f"\n{pub.system} ({pub.hardware}, {pub.devices} devices): published {pub.figure:,.0f} tok/s/device, "
          f"computed {pub.computed:,.0f}, bound {c.rate(c.bound):,.0f} -> achieved / bound {c.ratio:.2f}"
          + (f"; at the published batch {c.ratio_at_batch:.2f}" if c.at_batch else ""))
    assert 0 < c.ratio < 1
    if c.at_batch:
        assert 0 < c.ratio_at_batch < 1
        assert c.at_batch.batch == pub.batch_per_device * pub.devices
    lay = c.bound.layout
    assert (lay.world, lay.dp, lay.tp) == (pub.devices, pub.dp, pub.tp)
    assert check_layout(v3_costs().cfg, dp=lay.dp, tp=lay.tp, world=lay.world,
                        redundant_experts=pub.redundant_experts) == []


def test_the_layouts_are_the_published_ones():
    # DeepSeek: 9 routed experts per GPU in prefill (256 + 32 redundant over 32), 2 in decode (over 144)
    assert compare(BY_KEY["deepseek-h800-prefill"]).bound.layout.expert_slots == 9
    assert compare(BY_KEY["deepseek-h800-decode"]).bound.layout.expert_slots == 2
    # CloudMatrix decode: 320 dies, one expert each, as 160 NPUs of two slots
    assert compare(BY_KEY["cloudmatrix-decode"]).bound.layout.expert_slots == 2


def test_cache_hits_are_not_computed_tokens():
    """DeepSeek's 73.7k input tokens/s per node include on-disk KV-cache hits (56.3% of input tokens):
    only the misses are prefilled, 73.7k x 0.437 / 8 = 4,026 per GPU (CloudMatrix's paper uses the same)."""
    p = BY_KEY["deepseek-h800-prefill"]
    assert round(p.computed) == 4026
    c = compare(p)
    print(f"\nraw published prefill / bound = {p.figure / c.rate(c.bound):.2f} (cache hits included)")
    assert c.ratio < 1
