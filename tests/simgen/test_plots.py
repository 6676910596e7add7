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


def test_latent_space_of_vae_estimators_and_families(tmp_path):
    import simgen
    from simgen.models import VAE
    from simgen.plots import latent_space

    torch.manual_seed(0)
    vae = VAE(latent_features=3, hidden_features=8).build((4,), 2)
    y, c = torch.randn(60, 4), torch.randn(60, 2)
    fig = latent_space(vae, y, c, color=torch.arange(60) % 3, grid=4)
    left, right = fig.axes[:2]
    assert left.get_xlabel() == "PC 1" and len(left.get_legend().get_texts()) == 3
    assert len(right.lines) == 16
    fig.savefig(tmp_path / "latent.png")

    prior = torch.distributions.Independent(torch.distributions.Uniform(torch.zeros(2), torch.ones(2)), 1)
    emu = simgen.LikelihoodEstimator(prior, VAE(latent_features=2, channels=(4,), num_blocks=1))
    theta = torch.rand(64, 2)
    x = theta[:, :1, None] + 0.1 * torch.randn(64, 8, 8)
    emu.fit(theta, x, seed=0, progress=False, max_epochs=1)
    fig = latent_space(emu, x, theta, color_label="theta_1", grid=3)  # y = x, c = θ for an emulator
    assert fig.axes[0].get_xlabel() == "$z_1$" and len(fig.axes[1].images) == 1
    assert fig.axes[1].images[0].get_array().shape == (24, 24)

    with pytest.raises(ValueError, match="needs a VAE"):
        latent_space(torch.nn.Linear(2, 2), y, c)
    with pytest.raises(ValueError, match="y must have shape"):
        latent_space(vae, torch.zeros(5, 3), c[:5])
    with pytest.raises(ValueError, match="color must have"):
        latent_space(vae, y, c, color=torch.zeros(3))
    with pytest.raises(ValueError, match="at least 2"):
        latent_space(VAE(latent_features=1, hidden_features=8).build((4,), 2), y, c)
