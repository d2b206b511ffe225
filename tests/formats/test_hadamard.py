"""The fast Walsh-Hadamard butterfly against the explicit Sylvester matrix."""

from __future__ import annotations

import pytest
import torch

from trillion.formats import hadamard


def _sylvester(n: int) -> torch.Tensor:
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


@pytest.mark.parametrize("n", [1, 2, 4, 8, 64, 128, 512])
def test_matches_sylvester_matrix(n):
    x = torch.randn(3, 5, n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    ref = x @ _sylvester(n).T * n**-0.5
    assert torch.allclose(hadamard(x), ref, rtol=0, atol=1e-12)


def test_orthonormal_and_self_inverse():
    x = torch.randn(4, 256)
    y = hadamard(x)
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), rtol=1e-5)
    assert torch.allclose(hadamard(y), x, atol=1e-5)


def test_low_precision_keeps_dtype_and_input():
    x = torch.randn(2, 128).bfloat16()
    before = x.clone()
    y = hadamard(x)
    assert y.dtype == torch.bfloat16 and torch.equal(x, before)
    ref = (x.double() @ _sylvester(128).T * 128**-0.5).bfloat16()
    assert torch.allclose(y.float(), ref.float(), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("shape", [(3, 12), (0,), ()])
def test_rejects_non_power_of_two(shape):
    with pytest.raises(ValueError, match="power of two"):
        hadamard(torch.ones(shape))
