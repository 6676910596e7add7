import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from simgen.plots import corner  # noqa: E402


def test_corner_layout_with_reference_and_truth(tmp_path):
    samples, ref = torch.randn(500, 3), torch.randn(500, 3) + 0.2
    fig = corner(samples, reference=ref, truth=torch.zeros(3), labels=["a", "b", "c"])
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(fig.axes) == 9 and len(visible) == 6
    assert fig.axes[6].get_xlabel() == "a" and fig.axes[3].get_ylabel() == "b"
    fig.savefig(tmp_path / "corner.png")
    assert (tmp_path / "corner.png").stat().st_size > 0


def test_corner_input_errors():
    with pytest.raises(ValueError, match=r"samples must be \[n, d\]"):
        corner(torch.zeros(10))
    with pytest.raises(ValueError, match="reference"):
        corner(torch.zeros(10, 2), reference=torch.zeros(10, 3))
    with pytest.raises(ValueError, match="truth"):
        corner(torch.zeros(10, 2), truth=torch.zeros(3))
    with pytest.raises(ValueError, match="labels"):
        corner(torch.zeros(10, 2), labels=["a"])
