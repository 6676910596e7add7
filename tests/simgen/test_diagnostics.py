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


# ---------------------------------------------------------------------------------------------------------------
# calibration, two-sample tests, predictive checks and emulator comparisons (issue 7)

import math  # noqa: E402
from types import SimpleNamespace  # noqa: E402

from sbi.utils import BoxUniform  # noqa: E402

import simulators  # noqa: E402
from simgen import LikelihoodEstimator, PosteriorEstimator  # noqa: E402
from simgen import diagnostics as D  # noqa: E402
from simgen.models import CNF, Diffusion, Flow  # noqa: E402


class GaussianLinearPosterior:
    """The exact gaussian_linear posterior N(x/2, 0.05 I), its variance multiplied by ``scale`` (< 1:
    over-confident, > 1: under-confident)."""

    def __init__(self, scale: float = 1.0) -> None:
        self.std = math.sqrt(0.05 * scale)

    def sample_batched(self, n, xs, *, generator=None):
        xs = torch.as_tensor(xs)
        return xs[:, None, :] / 2 + self.std * torch.randn(xs.shape[0], n, xs.shape[1], generator=generator)

    def sample(self, n, x, *, generator=None):
        return self.sample_batched(n, torch.as_tensor(x).reshape(1, -1), generator=generator)[0]

    def log_prob(self, theta, x):
        return torch.distributions.Normal(torch.as_tensor(x) / 2, self.std).log_prob(torch.as_tensor(theta)).sum(-1)


class SimulatorAsEmulator:
    """A simulator used as its own emulator: sample_batched simulates, log_prob is the exact log-likelihood;
    ``shift`` moves every emulated draw (a wrong emulator whose log_prob stays consistent with its draws)."""

    def __init__(self, simulator, shift: float = 0.0) -> None:
        self.simulator, self.shift = simulator, shift

    def sample_batched(self, n, thetas, *, generator=None):
        thetas = torch.as_tensor(thetas)
        x = self.simulator(thetas.repeat_interleave(n, dim=0), generator=generator)
        return x.reshape(thetas.shape[0], n, *self.simulator.x_shape) + self.shift

    def log_prob(self, x, theta):
        return self.simulator.log_likelihood(theta, torch.as_tensor(x) - self.shift)


@pytest.fixture(scope="module")
def linear_task():
    sim = simulators.get("gaussian_linear", dim=2)
    g = torch.Generator().manual_seed(0)
    theta = math.sqrt(0.1) * torch.randn(300, 2, generator=g)  # the prior N(0, 0.1 I), seeded
    return sim, theta, sim(theta, generator=g)


def test_sbc_of_the_exact_posterior_is_uniform_and_miscalibration_is_flagged(linear_task):
    _, theta, x = linear_task
    exact = D.sbc(GaussianLinearPosterior(), theta, x, num_samples=100, seed=0)
    assert exact.ranks.shape == (300, 2) and exact.pvalues.shape == (2,)
    assert exact.ranks.min() >= 0 and exact.ranks.max() <= 100 and torch.equal(exact.ranks, exact.ranks.round())
    assert not exact.flagged and (exact.pvalues > 0.01).all()
    assert (exact.max_ecdf_deviation < 0.1).all()
    assert "consistent with uniform" in exact.summary()

    narrow = D.sbc(GaussianLinearPosterior(0.25), theta, x, num_samples=100, seed=0)
    assert narrow.flagged and (narrow.pvalues < 1e-6).all()
    extreme = ((narrow.ranks <= 10) | (narrow.ranks >= 90)).float().mean()
    assert extreme > 0.4  # ∪-shaped: the truth falls in the tails of an over-confident posterior (0.21 if uniform)
    wide = D.sbc(GaussianLinearPosterior(4.0), theta, x, num_samples=100, seed=0)
    assert wide.flagged and "NOT uniform" in wide.summary()
    # the same seed gives the same ranks
    assert torch.equal(D.sbc(GaussianLinearPosterior(), theta, x, num_samples=100, seed=0).ranks, exact.ranks)


def test_sbc_ranks_follow_sbis_strict_convention():
    theta = torch.tensor([[0.0, 1.0]])
    draws = torch.tensor([[[-1.0, 2.0], [0.0, 0.0], [1.0, 0.5]]])  # [1, L=3, 2]
    res = D.sbc_from_draws(draws, theta, bins=2)
    assert res.ranks.tolist() == [[1.0, 2.0]]  # #{draw < truth}: ties do not count
    with pytest.raises(ValueError, match=r"\[n, L, d_theta\]"):
        D.sbc_from_draws(draws[0], theta)


def test_coverage_of_the_exact_posterior_is_diagonal_and_over_confidence_is_flagged(linear_task):
    _, theta, x = linear_task
    exact = D.coverage(GaussianLinearPosterior(), theta, x, num_samples=100, seed=0)
    assert exact.levels.shape == exact.hpd.shape == exact.tarp.shape == (21,)
    assert exact.hpd[0] == 0 and exact.hpd[-1] == 1
    assert not exact.flagged, exact.summary()
    assert max(exact.max_deviation.values()) < 0.1 and exact.note == ""
    assert (exact.hpd - exact.levels).abs().max() < 0.1 and (exact.tarp - exact.levels).abs().max() < 0.1

    narrow = D.coverage(GaussianLinearPosterior(0.25), theta, x, num_samples=100, seed=0)
    assert narrow.flagged and narrow.pvalues["hpd"] < 1e-6 and narrow.pvalues["tarp"] < 1e-3
    mid = narrow.levels.sub(0.5).abs().argmin()
    assert narrow.hpd[mid] < 0.3  # an over-confident posterior's 50 % regions hold the truth far less often
    assert "over-confident" in narrow.summary()
    wide = D.coverage(GaussianLinearPosterior(4.0), theta, x, num_samples=100, seed=0)
    assert wide.flagged and wide.hpd[mid] > 0.7 and "under-confident" in wide.summary()


def test_coverage_skips_hpd_where_log_prob_is_an_ode_solve(linear_task):
    _, theta, x = linear_task

    class OdePosterior(GaussianLinearPosterior):
        log_prob_is_ode = True

    res = D.coverage(OdePosterior(), theta[:50], x[:50], num_samples=50, seed=0)
    assert res.hpd is None and res.hpd_credibility is None and "ODE" in res.note
    assert res.tarp.shape == res.levels.shape and set(res.pvalues) == {"tarp"}
    forced = D.coverage(OdePosterior(), theta[:50], x[:50], num_samples=50, seed=0, hpd=True)
    assert forced.hpd is not None
    # simgen estimators are recognised by their family's declared log_prob_kind; MCMC posteriors through their
    # likelihood
    cnf_estimator = SimpleNamespace(density=SimpleNamespace(family="transformed", density=SimpleNamespace(
        family="cnf", log_prob_kind="ode")))
    assert D.log_prob_is_ode(cnf_estimator)
    assert D.log_prob_is_ode(SimpleNamespace(likelihood=cnf_estimator))
    assert not D.log_prob_is_ode(SimpleNamespace(density=SimpleNamespace(density=SimpleNamespace(
        family="flow", log_prob_kind="exact"))))
    assert not D.log_prob_is_ode(GaussianLinearPosterior())
    # a wrapper's own False (e.g. a base-class default) does not hide an ODE family inside it
    wrapped = SimpleNamespace(density=SimpleNamespace(log_prob_is_ode=False, density=SimpleNamespace(
        family="diffusion", log_prob_kind="ode")))
    assert D.log_prob_is_ode(wrapped)
    assert not D.log_prob_is_ode(SimpleNamespace(log_prob_is_ode=False, density=wrapped.density))
    # the real classes declare it: families, and estimators (fitted or not) through their family
    assert D.log_prob_is_ode(CNF()) and D.log_prob_is_ode(Diffusion()) and not D.log_prob_is_ode(Flow())
    prior = BoxUniform(-torch.ones(2), torch.ones(2))
    assert D.log_prob_is_ode(PosteriorEstimator(prior, "cnf")) and not D.log_prob_is_ode(PosteriorEstimator(prior))
    assert LikelihoodEstimator(prior, "diffusion").log_prob_kind == "ode"


def test_sbc_and_coverage_of_a_posterior_estimator(two_moons, two_moons_posterior):
    theta = two_moons.prior.sample((40,))
    x = two_moons(theta)
    a = D.sbc(two_moons_posterior, theta, x, num_samples=30, seed=1, batch_size=16)
    b = D.sbc(two_moons_posterior, theta, x, num_samples=30, seed=1, batch_size=16)
    assert a.ranks.shape == (40, 2) and torch.equal(a.ranks, b.ranks)
    cov = D.coverage(two_moons_posterior, theta, x, num_samples=30, seed=1)
    assert cov.hpd is not None and cov.hpd.shape == (21,) and torch.all(cov.hpd[1:] >= cov.hpd[:-1])


def test_sbc_and_coverage_of_an_mcmc_posterior(conjugate, conjugate_emulator):
    post = conjugate_emulator.posterior(num_chains=10, warmup=5, thin=1, num_init=200, progress=False)
    theta = conjugate.prior.sample((6,))
    x = conjugate(theta)
    res = D.sbc(post, theta, x, num_samples=20, seed=0)
    assert res.ranks.shape == (6, 2) and res.ranks.max() <= 20
    cov = D.coverage(post, theta, x, num_samples=20, seed=0)  # unnormalised log_prob: ranks within one x only
    assert cov.hpd is not None and cov.hpd_credibility.shape == (6,)


def test_calibration_input_errors(linear_task):
    _, theta, x = linear_task
    with pytest.raises(ValueError, match="rows"):
        D.sbc(GaussianLinearPosterior(), theta, x[:10])
    with pytest.raises(ValueError, match="sample_batched"):
        D.sbc(object(), theta, x)
    with pytest.raises(ValueError, match="levels"):
        D.coverage(GaussianLinearPosterior(), theta, x, levels=[0.5, 1.5])
    with pytest.raises(ValueError, match="num_samples"):
        D.sbc(GaussianLinearPosterior(), theta, x, num_samples=0)


def test_mmd_is_near_zero_for_one_distribution_and_positive_for_two():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(500, 3, generator=g), torch.randn(500, 3, generator=g)
    same, shifted = D.mmd(a, b), D.mmd(a, b + 1.0)
    assert abs(same) < 0.01 and shifted > 0.1
    # the median heuristic makes it scale-free; unbiased: exactly symmetric in its arguments
    assert D.mmd(10 * a, 10 * (b + 1.0)) == pytest.approx(shifted, rel=1e-5)
    assert D.mmd(b, a) == pytest.approx(same, abs=1e-12)
    assert D.mmd(a, b, bandwidth=0.01) == pytest.approx(0.0, abs=1e-3)  # a tiny kernel sees no neighbours
    with pytest.raises(ValueError, match="one shape"):
        D.mmd(a, torch.randn(10, 2))
    with pytest.raises(ValueError, match="at least 2"):
        D.mmd(a[:1], b)


def test_posterior_predictive_flags_an_observation_the_model_cannot_produce(linear_task):
    sim, theta, x = linear_task
    ok = D.posterior_predictive(GaussianLinearPosterior(), sim, x[0], num_samples=500, seed=0)
    assert ok.theta.shape == (500, 2) and ok.x.shape == (500, 2) and ok.quantiles["x"].shape == (2,)
    assert not ok.flagged, ok.summary()
    far = torch.tensor([3.0, 3.0])  # ~7 prior predictive σ away; the posterior predictive centres at 1.5
    bad = D.posterior_predictive(GaussianLinearPosterior(), sim, far, num_samples=500, seed=0)
    assert bad.flagged and (bad.pvalues["x"] < 1e-3).all()
    with pytest.raises(ValueError, match="one observation"):
        D.posterior_predictive(GaussianLinearPosterior(), sim, x[:2])


def test_posterior_predictive_of_maps_compares_summary_statistics():
    sim = simulators.get("cosmology_maps", n_pix=16)

    class PriorAsPosterior:  # a crude posterior: the prior itself
        def sample(self, n, x, *, generator=None):
            return sim.prior.sample((n,))

    x_obs = sim(torch.tensor([[0.3, 0.8, -1.0]]), generator=torch.Generator().manual_seed(0))[0]
    res = D.posterior_predictive(PriorAsPosterior(), sim, x_obs, num_samples=100, seed=0)
    assert set(res.quantiles) == {"power_spectrum", "peak_counts", "pixel_histogram", "moments"}
    assert res.quantiles["power_spectrum"].shape == (8,) and res.x.shape == (100, 16, 16)
    assert all(((q >= 0) & (q <= 1)).all() for q in res.quantiles.values())


def test_compare_likelihood_exact_simulator_has_no_gap_and_a_wrong_one_is_flagged(linear_task):
    sim, theta, _ = linear_task
    exact = D.compare_likelihood(SimulatorAsEmulator(sim), sim, theta[:2], num_samples=500, seed=0)
    assert exact.simulated.shape == exact.emulated.shape == (2, 500, 2)
    assert exact.c2st.shape == exact.mmd.shape == (2,) and exact.wasserstein.shape == (2, 2)
    assert (exact.c2st - 0.5).abs().max() < 0.06
    assert exact.gap_nats == pytest.approx(0.0, abs=1e-9) and exact.gap_nats_per_dim == pytest.approx(0.0, abs=1e-9)
    assert not exact.flagged, exact.summary()
    assert set(exact.statistics) == {"mean", "variance"} and exact.ks_pvalues.shape == (2, 2)

    shift = 0.2
    wrong = D.compare_likelihood(SimulatorAsEmulator(sim, shift), sim, theta[:2], num_samples=500, seed=0)
    assert wrong.flagged and wrong.c2st.min() > 0.55 and wrong.mmd.min() > 0.01
    # E_p[log p − log q] = KL(N(μ, 0.1 I) ‖ N(μ + δ, 0.1 I)) = d δ² / (2 · 0.1) = 0.4 nats
    kl = 2 * shift**2 / (2 * 0.1)
    se = float(wrong.log_likelihood_gap_se.max())
    assert wrong.log_likelihood_gap == pytest.approx(torch.full((2,), kl), abs=4 * se + 0.01)
    assert len(wrong.table()) == 2 and "gap (nats)" in wrong.table()[0]


def test_compare_likelihood_flags_emulated_draws_the_simulator_cannot_produce(linear_task):
    """An emulated draw with exact log p = −∞ lies outside the simulator's support: it is counted and flagged,
    never turned into a NaN z-score that no threshold catches."""
    import dataclasses

    sim, theta, _ = linear_task
    exact = D.compare_likelihood(SimulatorAsEmulator(sim), sim, theta[:2], num_samples=500, seed=0)
    assert exact.impossible_fraction.tolist() == [0.0, 0.0] and not exact.flagged
    emulated = exact.emulated_log_likelihood.clone()
    emulated[1, :25] = -torch.inf  # 5 % of the second θ's draws
    bad = dataclasses.replace(exact, emulated_log_likelihood=emulated)
    assert bad.impossible_fraction.tolist() == pytest.approx([0.0, 0.05])
    assert torch.isfinite(bad.typicality_z).all()  # over the finite draws
    assert bad.flagged and any("cannot produce" in r and "[1]" in r for r in bad.reasons()), bad.reasons()
    assert "5.0 % of them impossible" in bad.summary() and bad.table()[1]["impossible"] == pytest.approx(0.05)
    emulated[1, :499] = -torch.inf  # a single finite draw: no z-score, and said so
    worse = dataclasses.replace(exact, emulated_log_likelihood=emulated)
    assert torch.isnan(worse.typicality_z[1]) and any("fewer than two" in r for r in worse.reasons())
    # below the tolerance (1 %) the draws are counted but not flagged
    emulated = exact.emulated_log_likelihood.clone()
    emulated[0, :2] = -torch.inf
    assert not dataclasses.replace(exact, emulated_log_likelihood=emulated).flagged


def test_former_names_compare_emulator_and_emulator_comparison_warn_and_still_work(linear_task):
    sim, theta, _ = linear_task
    new = D.compare_likelihood(SimulatorAsEmulator(sim), sim, theta[:1], num_samples=50, seed=0)
    with pytest.warns(DeprecationWarning, match="compare_likelihood"):
        old = D.compare_emulator(SimulatorAsEmulator(sim), sim, theta[:1], num_samples=50, seed=0)
    torch.testing.assert_close(old.emulated, new.emulated)
    torch.testing.assert_close(old.c2st, new.c2st)
    with pytest.warns(DeprecationWarning, match="LikelihoodComparison"):
        assert D.EmulatorComparison is D.LikelihoodComparison
    with pytest.warns(DeprecationWarning):
        from simgen.diagnostics import EmulatorComparison  # noqa: F401
    with pytest.raises(AttributeError):
        D.NoSuchName  # noqa: B018


def test_compare_likelihood_for_maps_uses_summary_statistics():
    sim = simulators.get("cosmology_maps", n_pix=16)
    theta = torch.tensor([[0.3, 0.8, -1.0]])
    exact = D.compare_likelihood(SimulatorAsEmulator(sim), sim, theta, num_samples=120, seed=0, gap=False)
    assert exact.is_map and exact.ks_pvalues is None and exact.log_likelihood_gap is None
    assert set(exact.statistics) == {"power_spectrum", "peak_counts", "pixel_histogram", "moments"}
    assert exact.statistics["power_spectrum"].z.shape == (1, 8)
    assert not exact.flagged, exact.summary()

    class WrongSigma8(SimulatorAsEmulator):
        def sample_batched(self, n, thetas, *, generator=None):
            return super().sample_batched(n, torch.as_tensor(thetas) + torch.tensor([0.0, 0.15, 0.0]),
                                          generator=generator)

    wrong = D.compare_likelihood(WrongSigma8(sim), sim, theta, num_samples=120, seed=0, gap=False)
    assert wrong.flagged and wrong.statistics["power_spectrum"].max_abs_z > 4
    assert (wrong.statistics["power_spectrum"].relative_error > 0).all()  # more power at a higher σ_8


def test_compare_likelihood_of_a_trained_flow_emulator(conjugate, conjugate_emulator):
    theta = torch.tensor([[0.0, 0.0], [1.0, -0.5]])
    res = D.compare_likelihood(conjugate_emulator, conjugate, theta, num_samples=400, seed=0, gap=True)
    assert res.c2st.max() < 0.6, res.summary()
    # held-out likelihood gap = KL(p ‖ q) ≥ 0 up to noise, small for a decent emulator
    assert (res.log_likelihood_gap > -4 * res.log_likelihood_gap_se).all() and res.gap_nats < 0.1


def test_compare_likelihood_sets_aside_and_flags_broken_emulated_vectors(linear_task):
    sim, theta, _ = linear_task

    class Broken(SimulatorAsEmulator):
        def sample_batched(self, n, thetas, *, generator=None):
            x = super().sample_batched(n, thetas, generator=generator).clone()
            x[0, :20, 1] = torch.nan  # 4 % of the first θ's draws
            return x

    res = D.compare_likelihood(Broken(sim), sim, theta[:2], num_samples=500, seed=0)
    assert res.non_finite_fraction.tolist() == pytest.approx([0.04, 0.0])
    assert torch.isfinite(res.c2st).all() and torch.isfinite(res.mmd).all() and torch.isfinite(res.ks_pvalues).all()
    assert torch.isfinite(res.statistics["mean"].z).all() and torch.isfinite(res.statistics["variance"].z).all()
    assert res.reasons() == [r for r in res.reasons() if "NaN or infinite" in r] and res.flagged


def test_compare_likelihood_reports_and_sets_aside_broken_simulations(linear_task):
    """A simulator's NaN or infinite draws are reported (a warning naming the θ rows) and left out of every statistic
    and of the gap, which stays that of the exact emulator (0) instead of turning NaN."""
    sim, theta, _ = linear_task

    class Failing:
        def __init__(self, inner):
            self.inner, self.x_shape, self.tractable = inner, inner.x_shape, True

        def __call__(self, theta, generator=None):
            x = self.inner(theta, generator=generator).clone()
            x[:7, 0] = torch.nan  # the first θ row's first 7 draws (rows are θ-major)
            return x

        def log_likelihood(self, theta, x):
            return self.inner.log_likelihood(theta, x)

    with pytest.warns(RuntimeWarning, match=r"7 of 1000 draws with NaN or infinite values \(θ rows \[0\]\)"):
        res = D.compare_likelihood(SimulatorAsEmulator(sim), Failing(sim), theta[:2], num_samples=500, seed=0)
    assert torch.isfinite(res.c2st).all() and torch.isfinite(res.mmd).all() and torch.isfinite(res.ks_pvalues).all()
    assert torch.isfinite(res.statistics["variance"].z).all() and torch.isfinite(res.typicality_z).all()
    assert res.log_likelihood_gap.abs().max() < 1e-4 and torch.isfinite(res.log_likelihood_gap_se).all()
    assert not res.flagged, res.reasons()
