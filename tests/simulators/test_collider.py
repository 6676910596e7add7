"""collider (parton → shower → detector → jets), its parton-smeared variant and collider_detector."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

import simulators
from simulators.collider import (
    EFFICIENCY,
    LAMBDA,
    LAMBDA_ROOT,
    RHO,
    T_CUT,
    Collider,
    ColliderDetector,
    bw_cdf,
    bw_log_density,
    bw_sample,
    detector_response_log_prob,
    jet_summary,
)

F64 = torch.float64
L = 99


def sbc_pvalue(ranks: torch.Tensor, bins: int = 5) -> float:
    """Chi-square uniformity of the ranks per column, Bonferroni over columns."""
    counts = np.stack([np.bincount(r * bins // (L + 1), minlength=bins) for r in ranks.T.numpy()])
    return min(1.0, len(counts) * stats.chisquare(counts, axis=1).pvalue.min())


@pytest.fixture(scope="module")
def chain():
    """One batch of 400 full-chain events with latents (shared by the read-only tests)."""
    sim = Collider()
    torch.manual_seed(0)
    theta = sim.prior.sample((400,))
    x, z = sim(theta, generator=torch.Generator().manual_seed(1), return_latents=True)
    return sim, theta, x, z


# ------------------------------------------------------------------------------------------ protocol


@pytest.mark.parametrize(
    ("name", "options", "x_shape", "x_kind", "tractable", "discrete"),
    [
        ("collider", {}, (10,), "vector", False, (8, 9)),
        ("collider", {"output": "set"}, (128, 4), "set", False, ()),
        ("collider", {"level": "parton_smeared"}, (1,), "vector", True, ()),
        ("collider_detector", {}, (2,), "vector", True, (0,)),
    ],
)
def test_attributes_shapes_dtypes_seeding(name, options, x_shape, x_kind, tractable, discrete):
    sim = simulators.get(name, **options)
    assert sim.name == name and sim.d_theta == 3
    assert sim.x_shape == x_shape and sim.x_kind == x_kind and sim.tractable is tractable
    assert sim.x_discrete == discrete
    theta = sim.prior.sample((20,))
    assert theta.shape == (20, 3) and sim.prior.support.check(theta).all()
    x = sim(theta, generator=torch.Generator().manual_seed(1))
    assert x.shape == (20, *x_shape) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert torch.equal(x, sim(theta.double().numpy(), generator=torch.Generator().manual_seed(1)))
    assert not torch.equal(x, sim(theta, generator=torch.Generator().manual_seed(2)))
    torch.manual_seed(3)
    y = sim(theta)
    torch.manual_seed(3)
    assert torch.equal(y, sim(theta))
    assert sim(theta[:0]).shape == (0, *x_shape)
    if tractable:
        log_l = sim.log_likelihood(theta, x)
        assert log_l.shape == (20,) and log_l.dtype == F64 and torch.isfinite(log_l).all()
    else:
        with pytest.raises(NotImplementedError, match="intractable likelihood"):
            sim.log_likelihood(theta, x)
        with pytest.raises(NotImplementedError, match="no exact reference posterior"):
            sim.reference_posterior(x[0], 5)


def test_priors():
    low, high = (
        Collider().prior.support.base_constraint.lower_bound,
        Collider().prior.support.base_constraint.upper_bound,
    )
    assert torch.allclose(low, torch.tensor([400.0, 5.0, 0.95])) and torch.allclose(
        high, torch.tensor([600.0, 50.0, 1.05])
    )
    prior = ColliderDetector().prior
    torch.manual_seed(1)  # (seed 0's first 20000 uniforms themselves fail KS at p = 5e-4)
    theta = prior.sample((20000,))
    assert prior.support.check(theta).all()
    # E log-uniform on [1, 500]: log E uniform; η, JES uniform
    assert stats.kstest(theta[:, 0].log().numpy(), stats.uniform(0, math.log(500)).cdf).pvalue > 0.001
    assert stats.kstest(theta[:, 1].numpy(), stats.uniform(-3, 6).cdf).pvalue > 0.001
    expected = -math.log(10.0 * math.log(500) * 6 * 0.1)
    assert prior.log_prob(torch.tensor([10.0, 0.0, 1.0])).item() == pytest.approx(expected, rel=1e-6)
    assert prior.log_prob(torch.tensor([600.0, 0.0, 1.0])).item() == -math.inf
    assert torch.distributions.biject_to(prior.support)(torch.zeros(3)).shape == (3,)


def test_bad_inputs():
    with pytest.raises(ValueError, match="output must be one of"):
        Collider(output="image")
    with pytest.raises(ValueError, match="level must be one of"):
        Collider(level="hadron")
    with pytest.raises(ValueError, match="output applies to level='full'"):
        Collider(output="set", level="parton_smeared")
    sim = Collider()
    with pytest.raises(ValueError, match=r"expected theta of shape \[n, 3\]"):
        sim(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="M > 0 and Gamma > 0"):
        sim(torch.tensor([[500.0, -1.0, 1.0]]))
    with pytest.raises(ValueError, match="JES > 0"):
        sim(torch.tensor([[500.0, 10.0, 0.0]]))
    # level="parton_smeared" has latents too (its mass cell), for gold: same x as without them
    smeared = Collider(level="parton_smeared")
    theta = torch.tensor([[500.0, 10.0, 1.0]])
    x, cell = smeared(theta, return_latents=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, smeared(theta, generator=torch.Generator().manual_seed(0)))
    assert cell.dtype == torch.long and cell.shape == (1,)
    with pytest.raises(ValueError, match="E > 0 and JES > 0"):
        ColliderDetector()(torch.tensor([[-1.0, 0.0, 1.0]]))


# ------------------------------------------------------------------------------------------- chain


def test_four_momentum_conservation_and_mass_ordering(chain):
    _, _, _, z = chain
    s, p = z.shower, z.parton
    B = len(p.m)
    leaf_sum = torch.zeros(B, 4, dtype=F64).index_add(0, s.event[s.is_leaf], s.p4[s.is_leaf])
    assert ((leaf_sum - p.p_x).abs().amax(1) / p.p_x[:, 0]).max() < 1e-9
    assert ((p.partons.sum(1) - p.p_x).abs().amax(1) / p.p_x[:, 0]).max() < 1e-9
    assert (p.partons[..., 0] ** 2 - (p.partons[..., 1:] ** 2).sum(-1)).abs().max() < 1e-9 * p.m.max() ** 2
    roots = s.parent < 0
    root_sum = torch.zeros(B, 4, dtype=F64).index_add(0, s.event[roots], s.p4[roots])
    assert ((root_sum - p.p_x).abs().amax(1) / p.p_x[:, 0]).max() < 1e-9
    split = ~s.is_leaf
    left, right = s.children[split, 0], s.children[split, 1]
    assert (s.parent[left] == torch.nonzero(split).squeeze(1)).all()
    rel = (s.p4[left] + s.p4[right] - s.p4[split]).abs().amax(1) / s.p4[split, 0]
    assert rel.max() < 1e-9
    assert (s.t[left].sqrt() + s.t[right].sqrt() < s.t[split].sqrt()).all()  # masses strictly decrease
    assert (s.t[split] > T_CUT).all() and (s.t[s.is_leaf] <= T_CUT).all()
    mass2 = s.p4[:, 0] ** 2 - (s.p4[:, 1:] ** 2).sum(-1)
    assert ((mass2 - s.t).abs() / s.p4[:, 0] ** 2).max() < 1e-9  # every node's p4 has mass² t
    # jets: √t_1 + √t_2 < ρ m; no forced leaf at the defaults; per-event offsets
    t_root = s.t[roots].reshape(B, 2)
    assert (t_root.sqrt().sum(1) < RHO * p.m).all()
    assert not s.forced_leaf.any() and s.depth.max() < 64
    assert torch.equal(s.offsets[1:] - s.offsets[:-1], torch.bincount(s.event, minlength=B))
    assert (s.event[:-1] <= s.event[1:]).all()


def test_shower_calibration(chain):
    """Spec calibration at the defaults: about 13 leaves per jet, median jet mass about 31 GeV."""
    _, _, _, z = chain
    s = z.shower
    leaves_per_jet = s.is_leaf.sum().item() / (2 * len(z.parton.m))
    assert 10 < leaves_per_jet < 17
    assert 25 < s.t[s.parent < 0].sqrt().median().item() < 38


def test_stage_log_probs_by_hand(chain):
    """The stage log-densities against a loop over the recorded draws of five events."""
    sim, theta, _, z = chain
    s, p, d = z.shower, z.parton, z.detector
    norm = -math.log(-math.expm1(-LAMBDA * (1 - 1e-3)))
    norm_root = -math.log(-math.expm1(-LAMBDA_ROOT * (1 - 1e-3)))
    for b in range(5):
        rows = range(s.offsets[b], s.offsets[b + 1])
        total = 0.0
        for i in rows:
            lam, c = (LAMBDA_ROOT, norm_root) if s.parent[i] < 0 else (LAMBDA, norm)
            total += math.log(lam) - lam * s.r[i].item() - math.log(s.scale[i].item()) + c
            if not s.is_leaf[i]:
                total -= math.log(4 * math.pi) + math.log(2)
        assert s.log_prob[b].item() == pytest.approx(total, rel=1e-10)
        M, G, jes = theta[b].double().tolist()
        m = p.m[b].item()
        a_lo, a_hi = math.atan((150**2 - M**2) / (M * G)), math.atan((1200**2 - M**2) / (M * G))
        log_bw = math.log(2 * m * M * G / ((a_hi - a_lo) * ((m**2 - M**2) ** 2 + (M * G) ** 2)))
        expected = log_bw + stats.norm.logpdf(p.y[b].item()) + stats.expon(scale=20).logpdf(p.pt[b].item())
        assert p.log_prob[b].item() == pytest.approx(expected - 2 * math.log(2 * math.pi) - math.log(2), rel=1e-10)
        total = 0.0
        for i in torch.nonzero(d.event == b).squeeze(1).tolist():
            if not d.in_acc[i]:
                continue
            E = d.energy[i].item()
            std = jes * E * math.sqrt(0.25 / E + 0.03**2)
            if d.detected[i]:
                total += math.log(EFFICIENCY) + stats.norm(jes * E, std).logpdf(d.e_reco[i].item())
            else:
                total += math.log(1 - EFFICIENCY * stats.norm.cdf((jes * E - 1.0) / std))
        assert d.log_prob[b].item() == pytest.approx(total, rel=1e-9)


def test_stages_compose_to_the_simulator():
    sim = Collider(output="set")
    theta = sim.prior.sample((30,))
    g = torch.Generator().manual_seed(7)
    z_p = sim.parton(theta, generator=g)
    z_s = sim.shower(z_p, generator=g)
    z_d = sim.detector(z_s, theta, generator=g)
    x = sim.observe(z_d, 30)
    assert torch.equal(x.float(), sim(theta, generator=torch.Generator().manual_seed(7)))
    assert x.shape == (30, 128, 4)
    # the set is sorted by p_T, padded with zeros, mask last
    mask = x[..., 3].bool()
    assert (x[..., 0][~mask] == 0).all() and (x[..., 0][:, :-1] >= x[..., 0][:, 1:]).all()
    assert torch.equal(mask.sum(1), torch.bincount(z_d.event[z_d.detected], minlength=30))


def test_joint_log_prob_and_autograd_score(chain):
    sim, theta, x, z = chain
    th = theta.double()
    log_p = sim.joint_log_prob(th, x, z)
    total = z.parton.log_prob + z.shower.log_prob + z.detector.log_prob
    assert torch.allclose(log_p, total, rtol=1e-12) and torch.isfinite(log_p).all()
    # x is a delta given z: a different x has probability zero
    x_bad = x.clone()
    x_bad[0, 0] += 1.0
    assert sim.joint_log_prob(th, x_bad, z)[0].item() == -math.inf
    # autograd joint score vs central finite differences, on 20 events
    sub = 20
    th_grad = th.clone().requires_grad_(True)
    (score,) = torch.autograd.grad(sim.joint_log_prob(th_grad, x, z)[:sub].sum(), th_grad)
    for k, step in enumerate((1e-3, 1e-4, 1e-6)):
        e = torch.zeros(3, dtype=F64)
        e[k] = step
        fd = (sim.joint_log_prob(th + e, x, z) - sim.joint_log_prob(th - e, x, z))[:sub] / (2 * step)
        assert torch.allclose(score[:sub, k], fd, rtol=1e-5, atol=1e-6)
    assert (score[:, :2] != 0).any(0).all() and (score[:, 2] != 0).any()


def test_gold_score_and_ratio_identities():
    """E[t(x,z|θ)] = 0 under p(x,z|θ) and E_θ1[r(x,z|θ0,θ1)] = 1, by Monte Carlo (the shower factor cancels)."""
    sim = Collider()
    n = 2000
    theta = torch.tensor([[500.0, 20.0, 1.0]], dtype=F64).expand(n, 3)
    x, z = sim(theta, generator=torch.Generator().manual_seed(11), return_latents=True)
    th = theta.clone().requires_grad_(True)
    (score,) = torch.autograd.grad(sim.joint_log_prob(th, x, z).sum(), th)
    assert ((score.mean(0) / (score.std(0) / math.sqrt(n))).abs() < 4).all()
    theta0 = torch.tensor([[505.0, 22.0, 0.995]], dtype=F64).expand(n, 3)
    ratio = torch.exp(sim.joint_log_prob(theta0, x, z) - sim.joint_log_prob(theta, x, z))
    assert abs(ratio.mean().item() - 1) < 4 * ratio.std().item() / math.sqrt(n)
    assert ratio.std().item() < 2  # the check has power: r is not wildly heavy-tailed here
    # negative control: a score evaluated at the wrong θ has a clearly non-zero mean
    th0 = theta0.clone().requires_grad_(True)
    (wrong,) = torch.autograd.grad(sim.joint_log_prob(th0, x, z).sum(), th0)
    assert ((wrong.mean(0) / (wrong.std(0) / math.sqrt(n))).abs() > 6).any()


# ------------------------------------------------------------------------------------- Breit–Wigner


@pytest.mark.parametrize(("M", "G"), [(400.0, 5.0), (600.0, 50.0)])
def test_breit_wigner_sampler_against_its_cdf(M, G):
    M_, G_ = torch.tensor(M, dtype=F64), torch.tensor(G, dtype=F64)
    m = bw_sample(torch.rand(5000, dtype=F64, generator=torch.Generator().manual_seed(0)), M_, G_)
    # the parton stage uses the same sampler: check its m too
    z_p = Collider().parton(torch.tensor([[M, G, 1.0]]).expand(5000, 3), generator=torch.Generator().manual_seed(1))

    def cdf(v):
        return bw_cdf(torch.as_tensor(v, dtype=F64), M_, G_).numpy()

    assert stats.kstest(m.numpy(), cdf).pvalue > 0.01 / 4
    assert stats.kstest(z_p.m.numpy(), cdf).pvalue > 0.01 / 4
    assert stats.kstest(m.numpy(), lambda v: bw_cdf(torch.as_tensor(v, dtype=F64), M_ + G_, G_).numpy()).pvalue < 1e-3
    # the density integrates to one and is the derivative of the CDF
    total, _ = integrate.quad(
        lambda v: math.exp(bw_log_density(torch.tensor(v, dtype=F64), M_, G_)), 150, 1200, points=[M], limit=200
    )
    assert total == pytest.approx(1.0, abs=1e-8)
    v = torch.tensor([300.0, M + 0.3 * G, 900.0], dtype=F64)
    deriv = (bw_cdf(v + 1e-4, M_, G_) - bw_cdf(v - 1e-4, M_, G_)) / 2e-4
    assert torch.allclose(deriv, bw_log_density(v, M_, G_).exp(), rtol=1e-6)


# ----------------------------------------------------------------------------------- parton smeared


def test_parton_smeared_density_integrates_to_one_and_matches_the_sampler():
    sim = Collider(level="parton_smeared")
    for M, G, jes in [(400.0, 5.0, 0.95), (550.0, 40.0, 1.05)]:
        theta = torch.tensor([[M, G, jes]], dtype=F64)
        grid = torch.linspace(50.0, 1600.0, 6201, dtype=F64)
        dens = sim.log_likelihood(theta, grid[:, None]).exp().numpy()
        assert integrate.simpson(dens, x=grid.numpy()) == pytest.approx(1.0, abs=1e-6)
        cdf = integrate.cumulative_trapezoid(dens, grid.numpy(), initial=0.0)
        x = sim(theta.expand(4000, 3), generator=torch.Generator().manual_seed(0)).double()[:, 0].numpy()
        g = grid.numpy()
        assert stats.kstest(x, lambda v, g=g, c=cdf: np.interp(v, g, c)).pvalue > 0.01 / 2


def test_parton_smeared_ridge():
    """The likelihood depends on (JES·M, JES·Γ) up to the window: nearly equal along the ridge."""
    sim = Collider(level="parton_smeared")
    x = torch.tensor([[470.0], [520.0], [505.0]], dtype=F64)
    a = sim.log_likelihood(torch.tensor([[500.0, 20.0, 1.0]], dtype=F64), x)
    b = sim.log_likelihood(torch.tensor([[500.0 / 1.04, 20.0 / 1.04, 1.04]], dtype=F64), x)
    c = sim.log_likelihood(torch.tensor([[500.0, 20.0, 1.04]], dtype=F64), x)
    assert torch.allclose(a, b, atol=1e-3) and not torch.allclose(a, c, atol=0.1)


def score_z(sim, theta, n, seed):
    x = sim(theta.expand(n, 3), generator=torch.Generator().manual_seed(seed)).double()
    th = theta.double().expand(n, 3).clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(sim.log_likelihood(th, x).sum(), th)
    return grad.mean(0) / (grad.std(0) / math.sqrt(n)), grad


def test_score_identity_exact_likelihoods():
    z, _ = score_z(Collider(level="parton_smeared"), torch.tensor([[480.0, 25.0, 1.01]]), 2000, seed=0)
    assert (z.abs() < 4).all()
    z, grad = score_z(ColliderDetector(), torch.tensor([[20.0, 1.0, 0.98]]), 4000, seed=1)
    assert (z[[0, 2]].abs() < 4).all() and (grad[:, 1] == 0).all()  # η enters only through the acceptance
    z, _ = score_z(ColliderDetector(), torch.tensor([[1.5, -0.5, 1.03]]), 4000, seed=2)  # near the threshold
    assert (z[[0, 2]].abs() < 4).all()


@pytest.mark.parametrize("m", [5])
def test_sbc_parton_smeared(m):
    sim = Collider(level="parton_smeared", grid_size=24)
    torch.manual_seed(0)
    num_draws = 100
    theta = sim.prior.sample((num_draws,))
    generator = torch.Generator().manual_seed(1)
    x = sim(theta.repeat_interleave(m, 0), generator=generator).reshape(num_draws, m, 1)
    samples = torch.stack([sim.reference_posterior(xi, L, generator=generator) for xi in x])
    assert sbc_pvalue((samples < theta[:, None]).sum(1)) > 0.01


@pytest.mark.slow
def test_sbc_parton_smeared_300_draws_default_grid():
    sim = Collider(level="parton_smeared")  # 64³ grid, 50 events per observation
    torch.manual_seed(10)
    theta = sim.prior.sample((300,))
    generator = torch.Generator().manual_seed(11)
    x = sim(theta.repeat_interleave(50, 0), generator=generator).reshape(300, 50, 1)
    samples = torch.stack([sim.reference_posterior(xi, L, generator=generator) for xi in x])
    p = sbc_pvalue((samples < theta[:, None]).sum(1))
    print(f"parton-smeared SBC (300 draws, 64³, 50 events): Bonferroni p = {p:.3f}")
    assert p > 0.01


# ----------------------------------------------------------------------------------------- detector


@pytest.mark.parametrize(
    ("E", "eta", "jes"), [(1.2, 0.3, 0.95), (5.0, -2.0, 1.0), (300.0, 1.0, 1.05), (50.0, 2.7, 1.0)]
)
def test_detector_likelihood_is_normalised(E, eta, jes):
    sim = ColliderDetector()
    theta = torch.tensor([[E, eta, jes]], dtype=F64)
    p_miss = sim.log_likelihood(theta, torch.tensor([[0.0, 0.0]], dtype=F64)).exp().item()
    lo, hi = 1.0, jes * E * (1 + 12 * math.sqrt(0.25 / E + 0.03**2))
    p_seen, _ = integrate.quad(
        lambda e: math.exp(sim.log_likelihood(theta, torch.tensor([[1.0, e]], dtype=F64)).item()), lo, hi, limit=200
    )
    assert p_miss + p_seen == pytest.approx(1.0, abs=1e-8)
    if abs(eta) >= 2.5:
        assert p_miss == 1.0
    # impossible observations
    assert sim.log_likelihood(theta, torch.tensor([[0.0, 3.0]], dtype=F64)).item() == -math.inf
    assert sim.log_likelihood(theta, torch.tensor([[1.0, 0.5]], dtype=F64)).item() == -math.inf


def test_detector_simulator_matches_its_likelihood():
    sim = ColliderDetector()
    theta = torch.tensor([[2.0, 0.5, 1.0]]).expand(20000, 3)
    x = sim(theta, generator=torch.Generator().manual_seed(0)).double()
    p_miss = sim.log_likelihood(theta[:1], torch.zeros(1, 2)).exp().item()
    assert stats.binomtest(int((x[:, 0] == 0).sum()), 20000, p_miss).pvalue > 0.001
    seen = x[x[:, 0] == 1, 1].numpy()
    cond = stats.truncnorm(
        (1.0 - 2.0) / (2.0 * math.sqrt(0.125 + 0.0009)), np.inf, 2.0, 2.0 * math.sqrt(0.125 + 0.0009)
    )
    assert stats.kstest(seen, cond.cdf).pvalue > 0.001
    # the chain's per-leaf density is this very function
    assert detector_response_log_prob is not None


# ----------------------------------------------------------------------------------------- jets


def test_jet_summary_by_hand_and_permutation_invariance(chain):
    # two back-to-back particles of p_T 100 and 50 plus one near the first
    pt = torch.tensor([[50.0, 100.0, 10.0, 0.0]], dtype=F64)
    eta = torch.tensor([[0.0, 0.0, 0.2, 0.0]], dtype=F64)
    phi = torch.tensor([[math.pi, 0.0, 0.1, 0.0]], dtype=F64)
    mask = torch.tensor([[True, True, True, False]])
    s = jet_summary(pt, eta, phi, mask)[0]
    p1 = 100 * torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=F64)
    p3 = 10 * torch.tensor([math.cosh(0.2), math.cos(0.1), math.sin(0.1), math.sinh(0.2)], dtype=F64)
    j1 = p1 + p3
    m1 = math.sqrt(j1[0] ** 2 - (j1[1:] ** 2).sum())
    jj = j1 + 50 * torch.tensor([1.0, -1.0, 0.0, 0.0], dtype=F64)
    m_jj = math.sqrt(jj[0] ** 2 - (jj[1:] ** 2).sum())
    assert s[0].item() == pytest.approx(m_jj, rel=1e-10)
    assert s[1].item() == pytest.approx(math.hypot(j1[1], j1[2]), rel=1e-10) and s[2].item() == pytest.approx(50.0)
    assert s[5].item() == pytest.approx(abs(math.atan2(j1[2], j1[1]) - math.pi), rel=1e-10)
    assert s[6].item() == pytest.approx(m1, rel=1e-8) and s[7].item() == pytest.approx(0.0, abs=1e-6)
    assert s[8:].tolist() == [2.0, 1.0]
    # no second seed: jet 2 zero and m_jj = m_j1; no particles: zeros
    one = jet_summary(pt[:, 1:3], eta[:, 1:3], phi[:, 1:3], mask[:, 1:3])[0]
    assert one[2] == 0 and one[0].item() == pytest.approx(one[6].item()) and one[9] == 0
    assert (jet_summary(pt, eta, phi, torch.zeros_like(mask)) == 0).all()
    # permuting the (padded) particles of real events changes nothing
    sim, _, x, z = chain
    set_sim = Collider(output="set")
    particles = set_sim.observe(z.detector, len(x))
    perm = torch.randperm(particles.shape[1], generator=torch.Generator().manual_seed(0))
    shuffled = particles[:, perm]
    again = jet_summary(shuffled[..., 0], shuffled[..., 1], shuffled[..., 2], shuffled[..., 3].bool())
    assert torch.allclose(again.float(), x, rtol=1e-6, atol=1e-4)
    # counts are integers and add up to the detected particles; a few events lack a second jet
    assert torch.equal(x[:, 8:], x[:, 8:].round()) and torch.equal(x[:, 8:].sum(1), particles[..., 3].sum(1).float())
    assert (x[:, 2] == 0).float().mean() < 0.1


def _three_leaf_tree(t_root, t_inner, t_leaf, t_a, t_b):
    """root → (inner, leaf), inner → (a, b): a hand-built ShowerLatents with exact two-body kinematics."""
    from simulators.collider import ShowerLatents, _kallen_sqrt, boost

    def decay(p_parent, t_p, t_1, t_2, axis):
        m_p = math.sqrt(t_p)
        q = _kallen_sqrt(torch.tensor(t_p, dtype=F64), torch.tensor(t_1, dtype=F64), torch.tensor(t_2, dtype=F64))
        q = q.item() / (2 * m_p)
        n = torch.tensor(axis, dtype=F64)
        rest = torch.stack(
            (
                torch.cat((torch.tensor([(t_p + t_1 - t_2) / (2 * m_p)], dtype=F64), q * n)),
                torch.cat((torch.tensor([(t_p + t_2 - t_1) / (2 * m_p)], dtype=F64), -q * n)),
            )
        )
        return boost(rest, p_parent.expand(2, 4), torch.tensor(m_p, dtype=F64).expand(2))

    root = torch.tensor([math.sqrt(t_root + 30.0**2), 0.0, 30.0, 0.0], dtype=F64)
    inner, leaf = decay(root, t_root, t_inner, t_leaf, [0.0, 0.6, 0.8])
    a, b = decay(inner, t_inner, t_a, t_b, [1.0, 0.0, 0.0])
    n = 5
    return ShowerLatents(
        event=torch.zeros(n, dtype=torch.long),
        jet=torch.zeros(n, dtype=torch.long),
        parent=torch.tensor([-1, 0, 0, 1, 1]),
        children=torch.tensor([[1, 2], [3, 4], [-1, -1], [-1, -1], [-1, -1]]),
        depth=torch.tensor([0, 1, 1, 2, 2]),
        t=torch.tensor([t_root, t_inner, t_leaf, t_a, t_b], dtype=F64),
        r=torch.zeros(n, dtype=F64),
        scale=torch.zeros(n, dtype=F64),
        first=torch.ones(n, dtype=torch.bool),
        flip=torch.zeros(n, dtype=torch.bool),
        direction=torch.zeros(n, 3, dtype=F64),
        p4=torch.stack((root, inner, leaf, a, b)),
        is_leaf=torch.tensor([False, False, True, True, True]),
        forced_leaf=torch.zeros(n, dtype=torch.bool),
        offsets=torch.tensor([0, n]),
        log_prob=torch.zeros(1, dtype=F64),
    )


def test_ginkgo_tree_likelihood_on_hand_built_three_leaf_trees():
    from simulators.collider import ginkgo_tree_log_likelihood

    lam, t_cut, eps = 1.5, 4.0, 1e-3
    norm = 1 - math.exp(-lam * (1 - eps))

    def p(t, s):
        return lam * math.exp(-lam * t / s) / (s * norm)

    def stop(s):
        return (1 - math.exp(-lam * min(s, t_cut) / s)) / norm

    for t_root, t_inner, t_leaf, t_a, t_b in [(400.0, 90.0, 2.0, 3.0, 1.0), (900.0, 30.0, 3.5, 0.5, 2.5)]:
        z_s = _three_leaf_tree(t_root, t_inner, t_leaf, t_a, t_b)
        r, i, lf = math.sqrt(t_root), math.sqrt(t_inner), math.sqrt(t_leaf)
        top = 0.5 * (p(t_inner, t_root) * stop((r - i) ** 2) + stop(t_root) * p(t_inner, (r - lf) ** 2)) / (4 * math.pi)
        ra, rb = math.sqrt(t_a), math.sqrt(t_b)
        low = 0.5 * (stop(t_inner) * stop((i - ra) ** 2) + stop(t_inner) * stop((i - rb) ** 2)) / (4 * math.pi)
        assert ginkgo_tree_log_likelihood(z_s).item() == pytest.approx(math.log(top * low), rel=1e-9)
    # an impossible tree (children heavier than the parent allows) has zero likelihood
    bad = _three_leaf_tree(400.0, 90.0, 2.0, 3.0, 1.0)
    bad.p4[3] = bad.p4[1] * 0.7  # child a now carries most of the inner node's mass² (0.49 t)
    bad.p4[4] = bad.p4[1] * 0.7
    assert ginkgo_tree_log_likelihood(bad).item() == -math.inf


def test_ginkgo_tree_likelihood_is_finite_on_simulated_showers(chain):
    from simulators.collider import ginkgo_tree_log_likelihood

    _, _, _, z = chain
    assert torch.isfinite(ginkgo_tree_log_likelihood(z.shower)).all()


def test_described_classes_keep_their_module_path():
    """A store records its simulator's and proposal's class as ``module.qualname`` and refuses to resume on a
    difference: the package split keeps the path the single module wrote."""
    from simulators.collider import LogUniformBox

    for cls in (Collider, ColliderDetector, LogUniformBox):
        assert f"{cls.__module__}.{cls.__qualname__}" == f"simulators.collider.{cls.__name__}"
