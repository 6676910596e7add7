"""The power-law tails' map of the flows (``simgen.models.tails``) and ``Flow(heavy_tails=True)``."""

import math

import pytest
import torch
from torch.distributions import Cauchy, Independent, StudentT, Uniform

import simgen
from simgen.models import Flow
from simgen.models.tails import PowerTails, fit_power_tails


def _rows(n: int = 5000) -> torch.Tensor:
    """[n, 3] columns: Gaussian, Cauchy, Student-t with 3 degrees of freedom."""
    torch.manual_seed(0)
    return torch.cat([torch.randn(n, 1), Cauchy(0.0, 1.0).sample((n, 1)), StudentT(3.0).sample((n, 1))], dim=1)


def test_fit_keeps_gaussian_columns_and_finds_power_laws():
    lam, scale = fit_power_tails(_rows())
    assert lam[0] == 0 and scale[0] == 1  # the identity: a Gaussian gains nothing from the map
    # tail index 2/λ + 1: about 2 for the Cauchy, 4 for t₃; the map's family is not exactly either
    assert 1.0 < lam[1] < 3.0, lam
    assert 0.3 < lam[2] < 1.2 and lam[2] < lam[1], lam


def test_map_inverse_and_log_det():
    u = _rows()[:50].requires_grad_(True)
    tails = PowerTails(3).fit(_rows())
    v, log_det = tails(u)
    assert torch.allclose(tails.inverse(v), u, rtol=1e-5, atol=1e-5)
    jac = torch.stack([torch.autograd.grad(v[:, j].sum(), u, retain_graph=True)[0][:, j] for j in range(3)], 1)
    assert torch.allclose(jac.abs().log().sum(dim=1), log_det, atol=1e-4)
    assert torch.equal(v[:, 0], u[:, 0])  # the Gaussian column passes unchanged
    # far out in a tail: finite both ways
    far = torch.tensor([[0.0, 1e6, -1e4]])
    assert torch.isfinite(tails(far)[0]).all() and torch.allclose(tails.inverse(tails(far)[0]), far, rtol=1e-4)


def test_unfitted_map_is_the_identity():
    u = _rows()[:20]
    v, log_det = PowerTails(3)(u)
    assert torch.equal(v, u) and torch.equal(log_det, torch.zeros(20))


def _cauchy_problem(n: int, generator: torch.Generator):
    prior = Independent(Uniform(torch.tensor([-1.0]), torch.tensor([1.0])), 1)
    theta = 2 * torch.rand(n, 1, generator=generator) - 1
    x = 2 * theta + 0.3 * torch.tan(math.pi * (torch.rand(theta.shape, generator=generator) - 0.5))
    return prior, theta, x


@pytest.fixture(scope="module")
def cauchy_emulators():
    g = torch.Generator().manual_seed(0)
    prior, theta, x = _cauchy_problem(1000, g)
    _, theta_t, x_t = _cauchy_problem(2000, g)
    fits = {}
    for heavy in (True, False):
        emu = simgen.LikelihoodEstimator(prior, Flow(heavy_tails=heavy))
        emu.fit(theta, x, seed=0, progress=False, max_epochs=40)
        fits[heavy] = emu
    return fits, theta_t, x_t


def test_flow_with_heavy_tails_emulates_cauchy_noise(cauchy_emulators):
    """x = 2θ + 0.3·Cauchy: the flow with the tails' map is close to the exact likelihood, a Gaussian-tailed flow
    is far off (a few rows far out cost it tens of nats each), and the draws follow the flow's own density in its
    tails (sampling inverts the map that ``log_prob`` applies)."""
    fits, theta_t, x_t = cauchy_emulators
    exact = Cauchy(2 * theta_t, 0.3).log_prob(x_t).sum(-1)
    gaps = {h: (exact - emu.log_prob(x_t, theta_t)).double() for h, emu in fits.items()}
    on, off = gaps[True], gaps[False]
    assert on.mean() < 0.1 and on.mean() > -4 * on.std() / math.sqrt(len(on)), on.mean()
    assert off.mean() > 0.3, off.mean()
    emu = fits[True]
    assert emu.density.density.tails.tail_weight[0] > 0.5
    n = 4000
    draws = emu.sample(n, torch.tensor([0.0]), generator=torch.Generator().manual_seed(1)).flatten()
    # the density's own mass beyond |x| = 10 (about 30 Cauchy scales), by quadrature on a log grid out to 10⁷
    pos = torch.logspace(-4, 7, 20_001, dtype=torch.float64)
    x = torch.cat([-pos.flip(0), pos])
    q = emu.log_prob(x.float()[:, None], torch.zeros(len(x), 1)).double().exp()
    assert abs(torch.trapezoid(q, x).item() - 1) < 1e-3
    mass = torch.trapezoid(q * (x.abs() > 10), x).item()
    share = (draws.abs() > 10).double().mean().item()
    assert mass > 0.005 and abs(share - mass) < 4 * math.sqrt(mass * (1 - mass) / n), (share, mass)


def test_flow_saved_before_heavy_tails_loads_without_them(cauchy_emulators, tmp_path):
    fits, theta_t, x_t = cauchy_emulators
    emu = fits[False]
    flow = emu.density.density
    state = {k: v for k, v in emu.density.state_dict().items()}
    fresh = Flow(heavy_tails=True).build(flow.y_shape, flow.context_features)
    assert fresh.tails is not None
    inner = {k.removeprefix("density."): v for k, v in state.items() if k.startswith("density.")}
    fresh.load_state_dict(inner, strict=True)
    assert fresh.tails is None and fresh.config()["heavy_tails"] is False
    c = torch.randn(5, flow.context_features)
    y = torch.randn(5, 1)
    assert torch.allclose(fresh.log_prob(y, c), flow.log_prob(y, c))
    path = tmp_path / "emu.pt"
    fits[True].save(path)
    back = simgen.load(path)
    assert torch.allclose(back.log_prob(x_t[:20], theta_t[:20]), fits[True].log_prob(x_t[:20], theta_t[:20]))


def test_heavy_tails_from_a_configuration():
    from simgen.config import parse_config
    from simgen.pipeline import model_of

    def likelihood_model(options: str) -> Flow:
        text = f'simulator = "two_moons"\n[likelihood]\nmodel = "flow"\n{options}'
        return model_of(parse_config(text, build_simulator=False)[0].likelihood, "vector")

    assert likelihood_model("options = { heavy_tails = false }\n").heavy_tails is False
    assert likelihood_model("").heavy_tails is True
