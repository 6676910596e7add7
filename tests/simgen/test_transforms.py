import pytest
import torch
from sbi.utils import BoxUniform
from torch.distributions import Independent, Normal

from simgen.transforms import Dequantize, LinearResidual, ProbitBox, Standardize, SupportBijection


def test_standardize_vector_roundtrip_and_logdet():
    y = torch.randn(500, 3) * torch.tensor([1.0, 5.0, 0.1]) + torch.tensor([0.0, 3.0, -2.0])
    s = Standardize((3,)).fit(y)
    u = s(y)
    assert torch.allclose(u.mean(0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(u.std(0), torch.ones(3), atol=1e-4)
    assert torch.allclose(s.inverse(u), y, atol=1e-5)
    expected = -torch.log(s.scale).sum()
    assert torch.allclose(s.log_abs_det_jacobian(y), expected.expand(500))


def test_standardize_maps_one_scalar_per_channel():
    y = torch.randn(50, 2, 4, 4) * torch.tensor([1.0, 3.0])[None, :, None, None]
    s = Standardize((2, 4, 4), per_channel=True).fit(y)
    assert s.scale.shape == (2, 1, 1)
    assert abs(s.scale[1].item() / s.scale[0].item() - 3.0) < 0.3
    # log|det| counts every pixel: 16 per channel
    assert torch.allclose(s.log_abs_det_jacobian(y)[0], -16 * torch.log(s.scale).sum())
    single = Standardize((4, 4), per_channel=True).fit(y[:, 0])
    assert single.scale.shape == (1, 1)


def test_standardize_constant_dimension_stays_finite():
    y = torch.cat([torch.randn(100, 1), torch.ones(100, 1)], dim=1)
    s = Standardize((2,)).fit(y)
    assert torch.isfinite(s(y)).all()


def test_support_bijection_box_roundtrip_and_jacobian():
    prior = BoxUniform(torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 10.0]))
    b = SupportBijection(prior)
    theta = prior.sample((100,))
    u = b(theta)
    assert torch.allclose(b.inverse(u), theta, atol=1e-5)
    # log|det ∂u/∂θ| against autograd on one row (the Jacobian is diagonal)
    t0 = theta[:1].double().requires_grad_(True)
    jac = torch.autograd.functional.jacobian(lambda t: b.bijection.inv(t), t0).reshape(2, 2)
    assert torch.allclose(b.log_abs_det_jacobian(theta[:1]).double(), torch.logdet(jac).reshape(1), atol=1e-4)


def test_support_bijection_samples_never_reach_the_bounds():
    prior = BoxUniform(-torch.ones(2), torch.ones(2))
    b = SupportBijection(prior)
    theta = b.inverse(torch.tensor([[50.0, -50.0], [200.0, 30.0]]))  # sigmoid rounds to ±1 in float32
    assert (theta < 1).all() and (theta > -1).all()
    assert torch.isfinite(prior.log_prob(theta)).all()
    assert torch.isfinite(b.log_abs_det_jacobian(theta)).all()


def test_probit_box_maps_a_uniform_onto_a_standard_normal_with_the_right_jacobian():
    prior = BoxUniform(torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 10.0]))
    b = SupportBijection(prior, map="probit")
    assert isinstance(b.bijection, ProbitBox)
    torch.manual_seed(0)
    theta = prior.sample((20_000,))
    u = b(theta)
    # Φ⁻¹ of a uniform is N(0, 1): moments within ~4 standard errors of 20,000 draws
    assert u.mean(0).abs().max() < 0.03 and (u.std(0) - 1).abs().max() < 0.03
    assert (u.pow(4).mean(0) - 3).abs().max() < 0.15
    assert torch.allclose(b.inverse(u), theta, atol=1e-5)
    t0 = theta[:1].double().requires_grad_(True)
    jac = torch.autograd.functional.jacobian(lambda t: b.bijection.inv(t), t0).reshape(2, 2)
    assert torch.allclose(b.log_abs_det_jacobian(theta[:1]).double(), torch.logdet(jac).reshape(1), atol=1e-4)


def test_probit_box_keeps_both_tails_inside_and_precise():
    b = SupportBijection(BoxUniform(-torch.ones(2), torch.ones(2)), map="probit")
    theta = b.inverse(torch.tensor([[40.0, -40.0], [9.0, -9.0]]))  # Φ rounds to 0 or 1 there
    assert (theta < 1).all() and (theta > -1).all()
    assert torch.isfinite(b.log_abs_det_jacobian(theta)).all()
    # θ a hair below the upper bound: measured from that bound, u is symmetric to the lower bound's
    u = b(torch.tensor([[1 - 1e-6, -1 + 1e-6]], dtype=torch.float64))
    assert torch.allclose(u[0, 0], -u[0, 1]) and u[0, 0] > 4.5


def test_probit_falls_back_to_biject_to_without_two_finite_bounds_and_rejects_unknown_maps():
    real = SupportBijection(Independent(Normal(torch.zeros(2), torch.ones(2)), 1), map="probit")
    theta = torch.randn(5, 2)
    assert torch.equal(real(theta), theta)
    with pytest.raises(ValueError, match="map must be one of"):
        SupportBijection(BoxUniform(-torch.ones(2), torch.ones(2)), map="tanh")


def test_support_bijection_contains_and_identity_for_real_support():
    box = SupportBijection(BoxUniform(-torch.ones(2), torch.ones(2)))
    inside = box.contains(torch.tensor([[0.0, 0.5], [1.0, 0.0], [0.0, float("nan")], [-2.0, 0.0]]))
    assert inside.tolist() == [True, False, False, False]
    real = SupportBijection(Independent(Normal(torch.zeros(2), torch.ones(2)), 1))
    theta = torch.randn(5, 2)
    assert torch.equal(real(theta), theta)
    assert torch.equal(real.log_abs_det_jacobian(theta), torch.zeros(5))


def test_dequantize_noise_stays_in_the_cell_and_rounds_back():
    y = torch.tensor([[0.0, 3.0, 1.5], [2.0, 7.0, -0.5]])
    dq = Dequantize([0, 1])
    noisy = dq.noise(y, torch.Generator().manual_seed(0))
    assert ((noisy[:, :2] - y[:, :2]) >= 0).all() and ((noisy[:, :2] - y[:, :2]) < 1).all()
    assert torch.equal(noisy[:, 2], y[:, 2])
    assert torch.equal(dq.round(noisy), y)
    assert torch.equal(dq.midpoint(y)[:, :2], y[:, :2] + 0.5)


def test_linear_residual_recovers_a_linear_gaussian_model():
    g = torch.Generator().manual_seed(0)
    c = torch.randn(20_000, 3, generator=g)
    weight = torch.tensor([[1.0, 0.0], [-2.0, 0.5], [0.0, 0.0]])
    v = c @ weight + torch.tensor([0.3, -1.0]) + torch.randn(20_000, 2, generator=g) * torch.tensor([0.5, 2.0])
    res = LinearResidual(2, 3, ridge=0.0).fit([(v, c)])
    assert torch.allclose(res.weight, weight, atol=0.03)
    assert torch.allclose(res.bias, torch.tensor([0.3, -1.0]), atol=0.03)
    assert torch.allclose(res.scale, torch.tensor([0.5, 2.0]), rtol=0.02)
    r = res(v, c)
    assert torch.allclose(r.mean(0), torch.zeros(2), atol=1e-4)
    assert torch.allclose(r.std(0), torch.ones(2), atol=1e-3)
    assert torch.allclose(res.inverse(r, c), v, atol=1e-4)
    assert torch.allclose(res.log_abs_det_jacobian(v), -torch.log(res.scale).sum().expand(20_000))
    # sampling shape: [m, k, d] draws under m context rows
    draws = res.inverse(torch.zeros(4, 5, 2), c[:4])
    assert torch.allclose(draws, (c[:4] @ res.weight + res.bias)[:, None].expand(4, 5, 2))


def test_linear_residual_fit_in_batches_equals_one_pass():
    g = torch.Generator().manual_seed(1)
    c, v = torch.randn(1000, 4, generator=g), torch.randn(1000, 3, generator=g)
    whole = LinearResidual(3, 4).fit([(v, c)])
    parts = LinearResidual(3, 4).fit(zip(v.split(128), c.split(128), strict=True))
    for name in ("weight", "bias", "scale"):
        assert torch.allclose(getattr(whole, name), getattr(parts, name), atol=1e-5)
    with pytest.raises(ValueError, match="at least one row"):
        LinearResidual(3, 4).fit([])


def test_linear_residual_of_a_deterministic_relation_stays_finite():
    c = torch.linspace(-1, 1, 100)[:, None]
    res = LinearResidual(1, 1, ridge=0.0).fit([(2 * c, c)])
    assert torch.isfinite(res(2 * c, c)).all() and res.scale.item() >= 0.99e-6


def test_positive_dims_reads_boxes_and_open_half_lines():
    from torch.distributions import Gamma, LogNormal, Uniform

    from simgen.transforms import positive_dims

    assert positive_dims(BoxUniform(torch.tensor([0.1, -1.0, 0.0]), torch.tensor([0.5, 1.0, 1.0]))) == (0,)
    assert positive_dims(Independent(LogNormal(torch.zeros(2), 1.0), 1)) == (0, 1)
    assert positive_dims(Independent(Gamma(torch.ones(3), 1.0), 1)) == ()  # [0, ∞): 0 is in the support
    assert positive_dims(Independent(Normal(torch.zeros(2), 1.0), 1)) == ()
    assert positive_dims(Independent(Uniform(torch.tensor([2.0]), torch.tensor([3.0])), 1)) == (0,)


def test_log_positive_takes_the_log_of_its_dimensions_only_and_stays_finite_outside():
    from simgen.transforms import LogPositive

    c = torch.tensor([[0.5, -2.0, 3.0], [2.0, 4.0, 0.0]], requires_grad=True)
    out = LogPositive(3, [0, 2])(c)
    expected = torch.tensor([[torch.log(torch.tensor(0.5)), -2.0, torch.log(torch.tensor(3.0))],
                             [torch.log(torch.tensor(2.0)), 4.0, torch.log(torch.tensor(torch.finfo().tiny))]])
    torch.testing.assert_close(out, expected)
    out.sum().backward()  # 0 in a log dimension: clamped, a finite value and gradient
    torch.testing.assert_close(c.grad, torch.tensor([[2.0, 1.0, 1 / 3], [0.5, 1.0, 0.0]]))
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\)"):
        LogPositive(3, [3])
