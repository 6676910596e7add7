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


# ---------------------------------------------------------------------------------------------------------------
# overlays, calibration, training, maps and spectra (issue 7)

import math  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from simgen import plots  # noqa: E402
from simgen.diagnostics import coverage as coverage_check  # noqa: E402
from simgen.diagnostics import sbc_from_draws  # noqa: E402
from simgen.training import TrainingHistory  # noqa: E402


def _visible(fig):
    return [ax for ax in fig.axes if ax.get_visible()]


def test_corner_overlays_named_sets_with_a_legend_and_keeps_every_mode_in_view():
    g = torch.Generator().manual_seed(0)
    modes = torch.tensor([[3.0, 0.0], [-3.0, 0.0]])
    bimodal = 0.3 * torch.randn(2000, 2, generator=g) + modes[torch.arange(2000) % 2]
    outliers = torch.cat([bimodal[:1990], torch.full((10, 2), 60.0)])  # 0.5 % stray draws
    fig = plots.corner({"flow": bimodal, "mcmc": outliers}, reference=bimodal + 0.05, truth=[3.0, 0.0])
    assert len(fig.axes) == 4 and len(_visible(fig)) == 3
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["flow", "mcmc", "reference", "truth"]
    lo, hi = fig.axes[2].get_xlim()  # bottom-left panel: θ₁ across both modes, the strays not stretching it
    assert lo < -3.3 and hi > 3.3 and hi < 10
    below = fig.axes[2]
    assert len(below.collections) >= 3  # credible contours of every set
    plt.close(fig)
    with pytest.raises(ValueError, match="one d"):
        plots.corner({"a": torch.zeros(10, 2), "b": torch.zeros(10, 3)})
    with pytest.raises(ValueError, match="levels"):
        plots.corner(torch.randn(50, 2), levels=(0.5, 1.2))


def _gaussian_calibration(scale: float):
    g = torch.Generator().manual_seed(1)
    theta = math.sqrt(0.1) * torch.randn(200, 3, generator=g)
    x = theta + math.sqrt(0.1) * torch.randn(200, 3, generator=g)
    draws = x[:, None] / 2 + math.sqrt(0.05 * scale) * torch.randn(200, 100, 3, generator=g)
    return theta, x, draws


class _Cached:
    def __init__(self, draws):
        self.draws = draws

    def sample_batched(self, n, xs):
        return self.draws[: xs.shape[0], :n]


def test_sbc_ranks_draws_one_panel_per_parameter_in_both_kinds():
    theta, _, draws = _gaussian_calibration(1.0)
    result = sbc_from_draws(draws, theta)
    for kind in ("hist", "ecdf"):
        fig = plots.sbc_ranks(result, kind=kind, labels=["a", "b", "c"])
        visible = _visible(fig)
        assert len(visible) == 3 and visible[2].get_xlabel().endswith("c")
        assert len(visible[0].collections) == 1 and len(visible[0].get_legend().get_texts()) == 1  # the band
        plt.close(fig)
    fig = plots.sbc_ranks(sbc_from_draws(torch.cat([draws] * 2, 2), torch.cat([theta] * 2, 1)))
    assert len(fig.axes) == 8 and len(_visible(fig)) == 6  # 4 per row, the spare cells hidden
    plt.close(fig)
    with pytest.raises(ValueError, match="kind"):
        plots.sbc_ranks(result, kind="violin")


def test_coverage_plot_has_the_diagonal_band_and_both_curves():
    theta, x, draws = _gaussian_calibration(1.0)
    exact = coverage_check(_Cached(draws), theta, x, num_samples=100, hpd=False)
    narrow = coverage_check(_Cached(_gaussian_calibration(0.25)[2]), theta, x, num_samples=100, hpd=False)
    fig = plots.coverage({"exact": exact, "narrow": narrow})
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_xlabel() == "credibility level α" and len(ax.lines) == 3  # diagonal + one TARP curve each
    assert any("band" in t.get_text() for t in ax.get_legend().get_texts())
    plt.close(fig)


def test_loss_curves_from_a_history_and_from_several():
    h = TrainingHistory(train_loss=[3.0, 2.0, 1.5, 1.4], validation_loss=[3.1, 2.2, 1.6, 1.7],
                        learning_rate=[1e-3, 1e-3, 5e-4, 5e-4], best_epoch=2, epochs=4)
    fig = plots.loss_curves(h)
    ax, ax_lr = fig.axes
    assert len(fig.axes) == 2 and ax_lr.get_yscale() == "log" and ax.get_xlabel() == "epoch"
    assert len(ax.lines) == 3  # train, validation, best-epoch marker
    np.testing.assert_allclose(ax.lines[1].get_ydata(), h.validation_loss)
    plt.close(fig)
    fig = plots.loss_curves({"flow": h, "cnf": h.to_dict()})
    assert len(fig.axes[0].lines) == 6 and len(fig.axes[1].lines) == 2
    plt.close(fig)
    with pytest.raises(ValueError, match="TrainingHistory"):
        plots.loss_curves(3)


def test_map_gallery_power_spectra_and_histograms():
    import simulators

    sim = simulators.get("cosmology_maps", n_pix=16)
    theta = torch.tensor([[0.3, 0.8, -1.0]]).repeat(6, 1)
    simulated = sim(theta, generator=torch.Generator().manual_seed(0))
    emulated = sim(theta, generator=torch.Generator().manual_seed(1))
    fig = plots.maps(simulated, emulated, num=3)
    assert len(fig.axes) == 2 * 3 + 1  # two rows of three maps, then the colour bar
    assert fig.axes[0].get_ylabel() == "simulated" and fig.axes[3].get_ylabel() == "emulated"
    assert all(len(ax.images) == 1 for ax in fig.axes[:6])
    plt.close(fig)

    fig = plots.power_spectra(simulated, emulated)
    spectra, ratio = fig.axes
    assert len(fig.axes) == 2 and spectra.get_xscale() == "log" and len(spectra.lines) == 2
    assert len(ratio.lines) == 2  # the ratio and the line at 1
    plt.close(fig)
    assert len(plots.power_spectra(simulated[:, None]).axes) == 1  # one set, [n, C, N, N]: no ratio panel

    fig = plots.histograms(torch.randn(300, 5), torch.randn(300, 5) + 0.1, labels=list("abcde"))
    assert len(_visible(fig)) == 5 and _visible(fig)[4].get_xlabel() == "e"
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["simulated", "emulated"]
    plt.close(fig)
    fig = plots.histograms({"sim": simulated, "emu": emulated})  # maps: one pooled pixel histogram
    assert len(_visible(fig)) == 1 and fig.axes[0].get_xlabel() == "pixel value"
    plt.close(fig)
    with pytest.raises(ValueError, match="maps"):
        plots.maps(torch.zeros(4, 5))
    with pytest.raises(ValueError, match="one shape"):
        plots.histograms({"a": torch.zeros(10, 2), "b": torch.zeros(10, 3)})
