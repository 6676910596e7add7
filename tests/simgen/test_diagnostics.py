import pytest
import torch

from simgen.diagnostics import c2st


def test_c2st_same_distribution_is_near_one_half():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1000, 2, generator=g), torch.randn(1000, 2, generator=g)
    assert abs(c2st(a, b) - 0.5) < 0.05


def test_c2st_detects_a_shift_and_uses_the_reference_scale():
    g = torch.Generator().manual_seed(1)
    ref = torch.randn(1000, 2, generator=g)
    assert c2st(ref + 1.5, ref) > 0.75
    # scaling both sets by the same factor changes nothing: z-scoring uses the reference's statistics
    assert c2st(1000 * (ref + 1.5), 1000 * ref) == pytest.approx(c2st(ref + 1.5, ref), abs=0.02)


def test_c2st_input_errors():
    with pytest.raises(ValueError, match=r"\[n, d\] and \[m, d\]"):
        c2st(torch.zeros(10, 2), torch.zeros(10, 3))
    with pytest.raises(ValueError, match="at least"):
        c2st(torch.zeros(3, 2), torch.zeros(10, 2))
    with pytest.raises(ValueError, match="finite"):
        c2st(torch.full((10, 2), float("nan")), torch.zeros(10, 2))
