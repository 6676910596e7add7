import math

import pytest
import torch

import simgen
from simgen.models import FAMILIES, MapFlow


def _perturbed(model: MapFlow, scale: float = 0.3, seed: int = 0) -> MapFlow:
    """A built model moved away from its identity initialisation, so that the checks are not trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


@pytest.mark.parametrize(("stationary", "filter_network"), [(True, "radial"), (False, "radial"),
                                                           (True, "per_radius")])
@pytest.mark.parametrize("y_shape", [(4, 4), (2, 4, 6)])
def test_log_prob_is_the_change_of_variables(y_shape, stationary, filter_network):
    """log p equals log N(z) + log|det ∂z/∂y| with a brute-force Jacobian of the model's own map y ↦ z."""
    torch.manual_seed(0)
    model = _perturbed(MapFlow(blocks=2, hidden_features=8, stationary=stationary, filter_network=filter_network)
                       .build(y_shape, 3).double())
    y, c = 1.5 * torch.randn(3, *y_shape, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
    d = math.prod(y_shape)
    log_p = model.log_prob(y, c)
    for i in range(3):
        def to_latent(v, i=i):
            return model._to_latent(v.reshape(1, *y_shape), c[i : i + 1])[0].reshape(-1)

        jac = torch.autograd.functional.jacobian(to_latent, y[i].reshape(-1))
        z = to_latent(y[i].reshape(-1))
        expected = -0.5 * z @ z - 0.5 * d * math.log(2 * math.pi) + torch.linalg.slogdet(jac)[1]
        assert log_p[i].item() == pytest.approx(expected.item(), abs=1e-9)


def test_density_integrates_to_one_on_a_2x2_field():
    """∫ p(y | c) dy = E_q[p/q] = 1 in 4-D, with a Gaussian proposal q of twice the model's covariance.

    The estimate is unbiased whatever q is (the model's samples only place q); q's heavier tails keep p/q
    bounded, so the standard error is honest.
    """
    torch.manual_seed(1)
    model = _perturbed(MapFlow(blocks=2, hidden_features=8).build((2, 2), 2).double(), scale=0.2)
    g = torch.Generator().manual_seed(2)
    for c in ([[0.3, -1.0]], [[-1.2, 0.5]]):
        c = torch.tensor(c, dtype=torch.float64)
        with torch.no_grad():
            draws = model.sample(20_000, c, generator=g)[0].reshape(-1, 4)
        q = torch.distributions.MultivariateNormal(draws.mean(0), 2.0 * torch.cov(draws.T))
        y = q.sample((100_000,))
        with torch.no_grad():
            log_w = model.log_prob(y.reshape(-1, 2, 2), c.expand(len(y), 2)) - q.log_prob(y)
        w = log_w.exp()
        mass, se = w.mean().item(), (w.std() / len(w) ** 0.5).item()
        assert se < 0.01, (mass, se)
        assert abs(mass - 1.0) < 4 * se, (mass, se)


@pytest.mark.parametrize("filter_network", MapFlow.filter_networks)
@pytest.mark.parametrize("y_shape", [(8, 8), (2, 6, 10)])
def test_log_prob_is_invariant_under_every_shift_on_the_torus(y_shape, filter_network):
    torch.manual_seed(2)
    model = _perturbed(MapFlow(blocks=2, hidden_features=8, filter_network=filter_network).build(y_shape, 2).double())
    y, c = torch.randn(2, *y_shape, dtype=torch.float64), torch.randn(2, 2, dtype=torch.float64)
    h, w = y_shape[-2:]
    with torch.no_grad():
        base = model.log_prob(y, c)
        for dy in range(h):
            for dx in range(w):
                shifted = model.log_prob(torch.roll(y, (dy, dx), (-2, -1)), c)
                torch.testing.assert_close(shifted, base, rtol=0, atol=1e-9)
        # and the lattice's quarter turn and reflection (the filters are isotropic)
        if h == w:
            torch.testing.assert_close(model.log_prob(torch.rot90(y, 1, (-2, -1)), c), base, rtol=0, atol=1e-9)
        torch.testing.assert_close(model.log_prob(torch.flip(y, (-1,)), c), base, rtol=0, atol=1e-9)


@pytest.mark.parametrize("stationary", [True, False])
def test_sampling_inverts_the_latent_map(stationary):
    torch.manual_seed(3)
    model = _perturbed(MapFlow(blocks=2, hidden_features=8, stationary=stationary).build((6, 6), 2).double())
    c = torch.randn(2, 2, dtype=torch.float64)
    with torch.no_grad():
        y = model.sample(4, c, generator=torch.Generator().manual_seed(5))
        z = torch.randn(8, 1, 6, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        back, _ = model._to_latent(y.reshape(8, 6, 6), c.repeat_interleave(4, 0))
    assert y.shape == (2, 4, 6, 6)
    torch.testing.assert_close(back, z, rtol=0, atol=1e-9)


def test_a_fresh_model_is_the_standard_normal():
    y, c = torch.randn(5, 4, 4), torch.randn(5, 3)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(y).sum((1, 2))
    for stationary in (True, False):
        model = MapFlow(stationary=stationary).build((4, 4), 3)
        torch.testing.assert_close(model.log_prob(y, c), expected)


def test_unconditional_model_and_bad_arguments():
    model = MapFlow(blocks=1).build((4, 4), None)
    assert model.sample(3, None).shape == (3, 4, 4)
    assert model.log_prob(torch.randn(2, 4, 4), None).shape == (2,)
    with pytest.raises(ValueError, match="maps"):
        MapFlow().build((16,), 3)
    with pytest.raises(ValueError, match=">= 1"):
        MapFlow(blocks=0)
    with pytest.raises(ValueError, match="filter_network must be one of"):
        MapFlow(filter_network="smooth")
    with pytest.raises(ValueError, match="shape"):
        model.log_prob(torch.randn(2, 4, 5), None)
    assert FAMILIES["mapflow"] is MapFlow
    assert MapFlow(**MapFlow(blocks=3, num_bins=4).config()).config() == MapFlow(blocks=3, num_bins=4).config()


def test_the_radial_filter_network_gives_every_radius_its_gain_from_one_shared_network():
    """The filter's log-gains are the offsets alone while the last layer is zero, then move with the context;
    an unconditional model has the offsets alone."""
    model = MapFlow(blocks=1, hidden_features=8).build((8, 8), 2)
    gain = model.filters[0]
    assert gain.offset.shape == (1, model.num_radii) and gain.rho.shape == (model.num_radii, 2 + gain.RADIAL_CENTRES)
    with torch.no_grad():
        gain.offset.copy_(torch.linspace(-1, 1, model.num_radii))
        c = torch.randn(3, 2)
        torch.testing.assert_close(gain(c, 3), gain.offset.reshape(1, -1).expand(3, -1))
        torch.nn.init.normal_(gain.coefficients.final.weight)
        out = gain(c, 3)
    assert out.shape == (3, model.num_radii) and not torch.allclose(out[0], out[1])
    assert model.filters[0].rho[0, 1] == 1 and model.filters[0].rho[1:, 1].eq(0).all()  # the mean mode flagged
    unconditional = MapFlow(blocks=1).build((4, 4), None)
    assert unconditional.filters[0].basis is None and unconditional.filters[0](None, 2).shape == (2, 6)


def test_a_state_dict_from_before_filter_network_loads_per_radius():
    """A model saved before ``filter_network`` existed (per-radius conditioners, no key in its config) loads as
    ``"per_radius"`` and gives the same log p; a radial model's state dict loads as radial."""
    torch.manual_seed(4)
    old = _perturbed(MapFlow(blocks=2, hidden_features=8, filter_network="per_radius").build((6, 6), 2))
    config = {k: v for k, v in old.config().items() if k != "filter_network"}  # as saved then
    new = MapFlow(**config).build((6, 6), 2)
    assert new.filter_network == "radial"  # the default for new models
    new.load_state_dict(old.state_dict())
    assert new.filter_network == "per_radius" and new.config()["filter_network"] == "per_radius"
    y, c = torch.randn(4, 6, 6), torch.randn(4, 2)
    torch.testing.assert_close(new.log_prob(y, c), old.log_prob(y, c), rtol=0, atol=0)
    radial = _perturbed(MapFlow(blocks=2, hidden_features=8).build((6, 6), 2))
    reloaded = MapFlow(**radial.config()).build((6, 6), 2)
    reloaded.load_state_dict(radial.state_dict())
    assert reloaded.filter_network == "radial"
    torch.testing.assert_close(reloaded.log_prob(y, c), radial.log_prob(y, c), rtol=0, atol=0)


def _gaussian_field(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A stationary Gaussian field whose spectrum P(k) ∝ (k + 1)^(−θ₁) is scaled by e^{θ₀}."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.rand(n, 2, generator=g) * torch.tensor([1.0, 2.0])
    k = torch.fft.fftfreq(size, 1.0 / size)
    radius = torch.hypot(k[:, None], k[None, :])
    power = torch.exp(theta[:, :1, None]) * (radius + 1.0) ** (-theta[:, 1:, None])
    white = torch.randn(n, size, size, generator=g)
    return theta, torch.fft.ifft2(power.sqrt() * torch.fft.fft2(white)).real


@pytest.mark.parametrize("stationary", [True, False])
def test_trains_samples_and_round_trips_through_an_estimator(tmp_path, stationary):
    torch.manual_seed(0)
    theta, x = _gaussian_field(512, 8, seed=0)
    prior = torch.distributions.Independent(torch.distributions.Uniform(torch.zeros(2), torch.tensor([1.0, 2.0])), 1)
    emu = simgen.LikelihoodEstimator(prior, model=MapFlow(blocks=1, hidden_features=16, stationary=stationary))
    history = emu.fit(theta, x, seed=0, progress=False, max_epochs=3)
    assert history.validation_loss[-1] < history.validation_loss[0]
    maps = emu.sample(6, theta[0], generator=torch.Generator().manual_seed(0))
    assert maps.shape == (6, 8, 8) and torch.isfinite(maps).all()
    path = tmp_path / "mapflow.pt"
    emu.save(str(path))
    loaded = simgen.load(str(path))
    torch.testing.assert_close(loaded.log_prob(x[:5], theta[:5]), emu.log_prob(x[:5], theta[:5]))
    torch.testing.assert_close(loaded.sample(3, theta[0], generator=torch.Generator().manual_seed(1)),
                               emu.sample(3, theta[0], generator=torch.Generator().manual_seed(1)))


def test_an_emulator_file_from_before_filter_network_loads_with_its_log_prob(tmp_path, monkeypatch):
    """``simgen.load`` of a file whose family config has no ``filter_network`` (written before the option)."""
    theta, x = _gaussian_field(256, 8, seed=1)
    prior = torch.distributions.Independent(torch.distributions.Uniform(torch.zeros(2), torch.tensor([1.0, 2.0])), 1)
    emu = simgen.LikelihoodEstimator(prior, model=MapFlow(blocks=1, hidden_features=8, filter_network="per_radius"))
    emu.fit(theta, x, seed=0, progress=False, max_epochs=2)
    config = MapFlow.config
    monkeypatch.setattr(MapFlow, "config", lambda self: {k: v for k, v in config(self).items()
                                                         if k != "filter_network"})
    emu.save(str(tmp_path / "old.pt"))
    monkeypatch.undo()
    loaded = simgen.load(str(tmp_path / "old.pt"))
    assert loaded.density.density.filter_network == "per_radius"
    torch.testing.assert_close(loaded.log_prob(x[:5], theta[:5]), emu.log_prob(x[:5], theta[:5]))


def test_the_shift_is_in_units_of_the_scale_and_earlier_files_keep_theirs():
    """u₀ = y e^{−s} − a: the field's mean is a e^{s}. A state dict from before that form (no flag) holds a in the
    map's units, u₀ = (y − a) e^{−s}, and loads as such."""
    model = MapFlow(blocks=1, hidden_features=8).build((4, 4), None)  # identity splines and filters
    with torch.no_grad():
        model.shift_scale.bias_view(2, 1).copy_(torch.tensor([[0.5], [math.log(2.0)]]))
    state = {k: v for k, v in model.state_dict().items() if k != "shift_in_scale_units"}
    old = MapFlow(blocks=1, hidden_features=8).build((4, 4), None)
    old.load_state_dict(state)
    zero = torch.zeros(1, 4, 4)
    torch.testing.assert_close(model.from_latent(zero, None), torch.full((1, 4, 4), 1.0))  # (0 + a) e^{s}
    torch.testing.assert_close(old.from_latent(zero, None), torch.full((1, 4, 4), 0.5))  # 0 · e^{s} + a
    y = torch.randn(3, 4, 4)
    for m in (model, old):
        torch.testing.assert_close(m.from_latent(m.to_latent(y, None)[0], None), y)
        assert m.log_prob(y, None).shape == (3,)
    reloaded = MapFlow(blocks=1, hidden_features=8).build((4, 4), None)
    reloaded.load_state_dict(model.state_dict())
    torch.testing.assert_close(reloaded.log_prob(y, None), model.log_prob(y, None), rtol=0, atol=0)
