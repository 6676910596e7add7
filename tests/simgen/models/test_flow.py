import pytest
import torch

from simgen.models import Flow, make_family


@pytest.mark.parametrize("kind", ["nsf", "maf", "realnvp"])
@pytest.mark.parametrize("d", [1, 3])
def test_flow_shapes(kind, d):
    flow = Flow(kind=kind, transforms=2, hidden_features=16).build((d,), 4)
    y, c = torch.randn(7, d), torch.randn(7, 4)
    assert flow.log_prob(y, c).shape == (7,)
    assert flow.loss(y, c).shape == ()
    assert flow.sample(5, c[:3]).shape == (3, 5, d)


def test_unconditional_flow():
    flow = Flow(transforms=2, hidden_features=16).build((2,), None)
    assert flow.sample(11, None).shape == (11, 2)
    assert flow.log_prob(torch.randn(4, 2), None).shape == (4,)


def test_flow_density_integrates_to_one():
    torch.manual_seed(0)
    flow = Flow(kind="nsf", transforms=2, hidden_features=16).build((1,), 2)
    with torch.no_grad():  # perturb the identity-initialised flow so the test is not trivial
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    grid = torch.linspace(-30, 30, 100_001)[:, None]
    c = torch.tensor([[0.3, -1.0]]).expand(grid.shape[0], 2)
    with torch.no_grad():
        mass = torch.trapezoid(flow.log_prob(grid, c).exp(), grid[:, 0])
    assert abs(mass.item() - 1.0) < 1e-3


def test_flow_sampling_follows_the_generator():
    flow = Flow(transforms=2, hidden_features=16).build((2,), 1)
    c = torch.zeros(1, 1)
    a = flow.sample(10, c, generator=torch.Generator().manual_seed(3))
    b = flow.sample(10, c, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_flow_rejects_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        Flow(kind="glow")
    with pytest.raises(RuntimeError, match="not built"):
        Flow().log_prob(torch.zeros(1, 2), None)
    with pytest.raises(ValueError, match="model must be one of"):
        make_family("diffusionn")


def test_flow_config_rebuilds_the_family():
    flow = Flow(kind="maf", transforms=3, hidden_features=8)
    assert Flow(**flow.config()).config() == flow.config()


def test_a_fresh_spline_flow_is_the_identity():
    """Spline layers start at the identity, so an estimator's initial model is its linear-Gaussian baseline."""
    flow = Flow().build((3,), 2)
    y, c = torch.randn(50, 3), torch.randn(50, 2)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(y).sum(1)
    assert torch.allclose(flow.log_prob(y, c), expected, atol=1e-4)


@pytest.mark.parametrize("inverse", [False, True])
def test_spline_matches_nflows_and_inverts(inverse):
    from nflows.transforms.splines.rational_quadratic import unconstrained_rational_quadratic_spline

    from simgen.models.flow import rational_quadratic_spline

    g = torch.Generator().manual_seed(0)
    n, k = 4000, 5
    # a third of the points fall in the linear tails beyond ±3
    x = 3.0 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    w, h, d = (torch.randn(n, 2, m, generator=g, dtype=torch.float64) for m in (k, k, k - 1))
    y_ref, lad_ref = unconstrained_rational_quadratic_spline(
        x, w, h, d.clone(), inverse=inverse, tails="linear", tail_bound=3.0
    )
    y, lad = rational_quadratic_spline(x, w, h, d, inverse=inverse, tail_bound=3.0)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(lad, lad_ref, rtol=0, atol=1e-12)
    back, lad_back = rational_quadratic_spline(y, w, h, d, inverse=not inverse, tail_bound=3.0)
    torch.testing.assert_close(back, x, rtol=0, atol=1e-9)
    torch.testing.assert_close(lad + lad_back, torch.zeros_like(lad), rtol=0, atol=1e-9)


def test_an_exact_family_declares_its_log_prob_exact_with_zero_standard_error():
    """``log_prob_kind`` and ``log_prob_with_se`` are declared on ConditionalDensity: an exact family's
    standard error is 0; a family whose log_prob is an estimate must override it rather than report 0."""
    torch.manual_seed(0)
    flow = Flow().build((3,), 2)
    y, c = torch.randn(5, 3), torch.randn(5, 2)
    logp, se = flow.log_prob_with_se(y, c)
    assert flow.log_prob_kind == "exact" and torch.equal(logp, flow.log_prob(y, c)) and torch.equal(se, torch.zeros(5))

    class Estimate(Flow):
        log_prob_kind = "importance"

    with pytest.raises(NotImplementedError, match="importance"):
        Estimate().build((3,), 2).log_prob_with_se(y, c)
