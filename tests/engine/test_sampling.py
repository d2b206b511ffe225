"""Sampling transforms against brute-force versions; speculative rejection sampling preserves p."""

import math

import torch

from trillion.engine.sampling import (
    SamplingParams,
    apply_penalties,
    draw,
    filter_probs,
    target_distribution,
    verify_draft,
)


def _probs(logits, temperature):
    e = [math.exp(x / temperature) for x in logits]
    return [x / sum(e) for x in e]


def test_top_k_top_p_min_p_against_brute_force():
    g = torch.Generator().manual_seed(0)
    for trial in range(50):
        logits = torch.randn(12, generator=g) * 2
        t = [0.5, 1.0, 1.7][trial % 3]
        k = [0, 3, 7][trial % 3]
        top_p = [1.0, 0.9, 0.5, 0.2][trial % 4]
        min_p = [0.0, 0.05, 0.2][trial % 3]
        params = SamplingParams(temperature=t, top_k=k, top_p=top_p, min_p=min_p)
        got = filter_probs(logits, params)
        # brute force, step by step in plain Python
        vals = logits.tolist()
        keep = set(range(12))
        if k:
            keep = set(sorted(range(12), key=lambda i: -vals[i])[:k])
        p = _probs([vals[i] if i in keep else -math.inf for i in range(12)], t)
        order = sorted(range(12), key=lambda i: -p[i])
        mass, kept = 0.0, set()
        for i in order:
            if mass >= top_p and kept:
                break
            kept.add(i)
            mass += p[i]
        p = [p[i] if i in kept else 0.0 for i in range(12)]
        best = max(p)
        p = [x if x >= min_p * best else 0.0 for x in p]
        want = torch.tensor([x / sum(p) for x in p])
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_penalties_against_brute_force():
    logits = torch.tensor([2.0, -1.0, 0.5, 3.0, -2.0, 0.0])
    params = SamplingParams(repetition_penalty=1.3, presence_penalty=0.4, frequency_penalty=0.25)
    prompt, output = [0, 1], [3, 3, 4]
    got = apply_penalties(logits, params, prompt, output)
    want = logits.tolist()
    for i in (0, 1, 3, 4):
        want[i] = want[i] / 1.3 if want[i] > 0 else want[i] * 1.3
    for i in set(output):
        want[i] -= 0.4 + 0.25 * output.count(i)
    torch.testing.assert_close(got, torch.tensor(want))


def test_greedy_is_the_argmax_after_penalties():
    logits = torch.tensor([1.0, 5.0, 4.9])
    p = target_distribution(logits, SamplingParams(temperature=0, repetition_penalty=2.0), [1], [])
    assert p.tolist() == [0.0, 0.0, 1.0]


def test_seeded_draws_are_reproducible():
    p = torch.tensor([0.1, 0.2, 0.3, 0.4])
    a = [draw(p, torch.Generator().manual_seed(7)) for _ in range(1)] + [0]
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert [draw(p, g1) for _ in range(50)] == [draw(p, g2) for _ in range(50)]
    assert a[0] == draw(p, torch.Generator().manual_seed(7))


def test_bad_parameters_are_refused_with_their_name():
    for kw in [{"temperature": -1}, {"top_p": 0}, {"top_k": -2}, {"n": 0}, {"logprobs": 50}]:
        name = next(iter(kw))
        try:
            SamplingParams(**kw)
        except ValueError as e:
            assert name in str(e)
        else:
            raise AssertionError(f"{kw} accepted")


def test_speculative_rejection_sampling_preserves_the_target_distribution():
    # Draw d ~ q, then verify against p: the emitted token must follow p exactly.
    p = torch.tensor([0.05, 0.5, 0.15, 0.3])
    q = torch.tensor([0.4, 0.1, 0.4, 0.1])
    g = torch.Generator().manual_seed(3)
    n = 60000
    counts = torch.zeros(4)
    accepted = 0
    for _ in range(n):
        d = draw(q, g)
        ok, tok = verify_draft(p, q, d, g, greedy=False)
        counts[tok] += 1
        accepted += ok
    freq = counts / n
    assert (freq - p).abs().max() < 0.01, freq
    # the acceptance rate is sum_x min(p, q) (Leviathan et al.)
    assert abs(accepted / n - float(torch.minimum(p, q).sum())) < 0.01
