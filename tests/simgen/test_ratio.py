"""Neural ratio estimation (simgen.RatioEstimator) on a conjugate 2-D Gaussian with an analytic log ratio.

θ ~ N(0, I₂), x | θ ~ N(θ, I₂): log r(θ, x) = log N(x; θ, I) − log N(x; 0, 2 I), and p(θ | x) = N(x / 2, I / 2).
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal

import simgen
from simgen.estimators.ratio import RATIO_MODELS, RECOMMENDED_RATIO_MODEL, TRE_ALPHA_MIN, waymark_weights

PRIOR = MultivariateNormal(torch.zeros(2), torch.eye(2))


def _simulate(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(n, 2, generator=g)
    return theta, theta + torch.randn(n, 2, generator=g)


def _true_log_ratio(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return Normal(theta, 1.0).log_prob(x).sum(1) - Normal(0.0, math.sqrt(2.0)).log_prob(x).sum(1)


def _held_out_pairs(n: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
    """Joint and marginal pairs from fresh simulations, kept in the bulk (|θ| < 2, |x| < 2.5)."""
    theta, x = _simulate(n, seed=1)
    shuffled = theta[torch.randperm(n, generator=torch.Generator().manual_seed(2))]
    theta, x = torch.cat([theta, shuffled]), torch.cat([x, x])
    keep = (theta.norm(dim=1) < 2) & (x.norm(dim=1) < 2.5)
    return theta[keep], x[keep]


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    return _simulate(10_000, seed=0)


@pytest.fixture(scope="module")
def nre(data) -> simgen.RatioEstimator:
    est = simgen.RatioEstimator(PRIOR, "nre", device="cpu")
    est.fit(*data, seed=0, progress=False, max_epochs=40)  # capped for the suite's time: the best epoch within it
    return est


@pytest.fixture(scope="module")
def bnre(data) -> simgen.RatioEstimator:
    est = simgen.RatioEstimator(PRIOR, "bnre", device="cpu")
    est.fit(*data, seed=0, progress=False)
    return est


def test_nre_recovers_the_analytic_log_ratio(nre):
    theta, x = _held_out_pairs()
    error = nre.log_ratio(theta, x) - _true_log_ratio(theta, x)
    assert float(error.abs().mean()) < 0.1


def test_nre_mcmc_posterior_matches_the_analytic_posterior(nre):
    x_obs = torch.tensor([0.6, -0.4])
    post = nre.posterior(num_chains=100, warmup=200, progress=False)
    draws = post.sample(2000, x_obs, generator=torch.Generator().manual_seed(0))
    exact = x_obs / 2 + math.sqrt(0.5) * torch.randn(2000, 2, generator=torch.Generator().manual_seed(1))
    assert simgen.diagnostics.c2st(draws, exact) <= 0.6


def test_ratio_posterior_works_with_the_diagnostics(bnre):
    theta, x = _simulate(20, seed=3)
    post = bnre.posterior(num_chains=10, warmup=30, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # short chains: R-hat and ESS are flagged
        cov = simgen.diagnostics.coverage(post, theta, x, num_samples=50, seed=0)
        sbc = simgen.diagnostics.sbc(post, theta, x, num_samples=50, seed=0)
    assert cov.hpd is not None and cov.tarp.shape == cov.levels.shape
    assert sbc.ranks.shape == (20, 2)


def test_bnre_balance_condition_holds_on_held_out_pairs(bnre, nre):
    theta, x = _simulate(4000, seed=4)
    marginal = theta[torch.randperm(4000, generator=torch.Generator().manual_seed(5))]

    def balance(est):
        return float(torch.sigmoid(est.log_ratio(theta, x)).mean() + torch.sigmoid(est.log_ratio(marginal, x)).mean())

    assert abs(balance(bnre) - 1.0) < 0.02


def test_log_ratio_broadcasts_and_the_likelihood_sums_over_observations(nre):
    theta = torch.tensor([[0.0, 0.0], [1.0, -1.0], [0.5, 0.2]])
    x = torch.tensor([[0.3, 0.1], [1.0, 0.0]])
    per_row = torch.stack([nre.log_ratio(theta, x[i]) for i in range(2)])  # [2, 3]
    assert torch.allclose(nre.log_likelihood(theta, x), per_row.sum(0), atol=1e-5)
    assert nre.log_ratio(theta[0], x[0]).shape == (1,)


def test_save_load_round_trip(nre, tmp_path):
    path = tmp_path / "nre.pt"
    nre.save(path)
    loaded = simgen.load(path)
    assert isinstance(loaded, simgen.RatioEstimator) and loaded.variant == RECOMMENDED_RATIO_MODEL
    theta, x = _held_out_pairs(200)
    assert torch.allclose(loaded.log_ratio(theta, x), nre.log_ratio(theta, x), atol=1e-6)
    assert loaded.history.epochs == nre.history.epochs


@pytest.mark.parametrize("variant", sorted(RATIO_MODELS))
def test_every_variant_trains_saves_and_loads(variant, tmp_path):
    theta, x = _simulate(600, seed=6)
    est = simgen.RatioEstimator(PRIOR, variant, device="cpu", hidden_features=16)
    history = est.fit(theta, x, seed=0, progress=False, max_epochs=3)
    assert history.epochs == 3 and all(math.isfinite(v) for v in history.validation_loss)
    est.save(tmp_path / "m.pt")
    loaded = simgen.load(tmp_path / "m.pt")
    assert loaded.task == est.task
    assert torch.allclose(loaded.log_ratio(theta[:5], x[:5]), est.log_ratio(theta[:5], x[:5]), atol=1e-6)


def test_tre_waymarks_run_from_the_joint_to_the_marginal():
    alpha = waymark_weights(5)
    assert alpha[0] == 0.0 and alpha[1] == pytest.approx(TRE_ALPHA_MIN) and alpha[-1] == pytest.approx(1.0)
    ratios = alpha[2:] / alpha[1:-1]
    assert torch.allclose(ratios, ratios[0].expand_as(ratios), rtol=1e-4)  # geometric
    assert waymark_weights(1).tolist() == [0.0, 1.0]  # one head: NRE-A's joint against marginal


def test_tre_heads_sum_to_the_analytic_log_ratio_of_a_narrow_posterior():
    """x | θ ~ N(θ, 0.1² I): a posterior ten times narrower than the prior, where one classifier learns a blurred
    ratio (NRE-A on these pairs misses the tolerance) and TRE's heads, summed, recover it on joint pairs and on
    pairs one to two posterior widths off."""
    s = 0.1
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(4000, 2, generator=g)
    est = simgen.RatioEstimator(PRIOR, "tre", num_waymarks=4, device="cpu")
    est.fit(theta, theta + s * torch.randn(4000, 2, generator=g), seed=0, progress=False)
    g = torch.Generator().manual_seed(1)
    joint = torch.randn(2000, 2, generator=g)
    x = joint + s * torch.randn(2000, 2, generator=g)
    theta, x = torch.cat([joint, joint + 1.5 * s * torch.randn(2000, 2, generator=g)]), torch.cat([x, x])
    keep = (theta.norm(dim=1) < 2) & (x.norm(dim=1) < 2)
    theta, x = theta[keep], x[keep]
    exact = Normal(theta, s).log_prob(x).sum(1) - Normal(0.0, math.sqrt(1 + s**2)).log_prob(x).sum(1)
    assert float((est.log_ratio(theta, x) - exact).abs().mean()) < 0.2


def test_validation_loss_is_deterministic(data):
    est = simgen.RatioEstimator(PRIOR, "nre_c", device="cpu", hidden_features=16)
    est.fit(*data, seed=0, progress=False, max_epochs=1)
    theta, x = data[0][:500], data[1][:500]
    est.density.eval()
    with torch.no_grad():
        assert float(est.density.loss(theta, x)) == float(est.density.loss(theta, x))


def test_set_data_use_the_set_embedding(tmp_path):
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(400, 2, generator=g)
    x = theta[:, None, :] + torch.randn(400, 5, 2, generator=g)  # 5 i.i.d. draws per θ, no mask channel
    est = simgen.RatioEstimator(PRIOR, "nre_a", x_kind="set", device="cpu",
                                embedding=simgen.nets.DeepSets((5, 2), masked=False, out_features=8))
    est.fit(theta, x, seed=0, progress=False, max_epochs=2)
    assert isinstance(est.density.embedding, simgen.nets.DeepSets)
    perm = x[:, torch.randperm(5, generator=g)]
    assert torch.allclose(est.log_ratio(theta[:10], x[:10]), est.log_ratio(theta[:10], perm[:10]), atol=1e-5)
    est.save(tmp_path / "set.pt")
    assert isinstance(simgen.load(tmp_path / "set.pt").density.embedding, simgen.nets.DeepSets)


def test_fit_from_a_store(tmp_path):
    class Sim:
        prior = PRIOR

        def __call__(self, theta):
            return theta + torch.randn(theta.shape)

    path = tmp_path / "runs.h5"
    simgen.simulate(Sim(), PRIOR, 600, seed=0, chunk_size=200, progress=False, store=path, return_data=False)
    est = simgen.RatioEstimator(PRIOR, "nre_a", device="cpu", hidden_features=16)
    history = est.fit(path, seed=0, progress=False, max_epochs=2)
    assert history.num_train + history.num_validation == 600
    streamed = simgen.RatioEstimator(PRIOR, "nre_a", device="cpu", hidden_features=16)
    history = streamed.fit(path, seed=0, progress=False, max_epochs=2, max_memory_gb=1e-9)  # chunk by chunk
    assert history.num_train + history.num_validation == 600


def test_bad_inputs():
    with pytest.raises(ValueError, match="model must be 'nre'"):
        simgen.RatioEstimator(PRIOR, "flow")
    with pytest.raises(ValueError, match="nre_a takes"):
        simgen.RatioEstimator(PRIOR, "nre_a", gamma=2.0)
    with pytest.raises(ValueError, match="num_classes"):
        simgen.RatioEstimator(PRIOR, "nre_b", num_classes=1)
    with pytest.raises(ValueError, match="gamma"):
        simgen.RatioEstimator(PRIOR, "nre_c", gamma=-1.0)
    with pytest.raises(ValueError, match="nre_c takes"):
        simgen.RatioEstimator(PRIOR, "nre_c", num_waymarks=4)
    with pytest.raises(ValueError, match="num_waymarks must be an int >= 1"):
        simgen.RatioEstimator(PRIOR, "tre", num_waymarks=2.5)
    with pytest.raises(ValueError, match="prior"):
        simgen.RatioEstimator(None)
    est = simgen.RatioEstimator(PRIOR, "nre_b", device="cpu")
    with pytest.raises(RuntimeError, match="not fitted"):
        est.log_ratio(torch.zeros(1, 2), torch.zeros(1, 2))
    theta, x = _simulate(100, seed=7)
    with pytest.raises(ValueError, match="batch_size must exceed"):
        est.fit(theta, x, batch_size=9, progress=False)
    with pytest.raises(ValueError, match="same number of rows"):
        est.fit(theta, x[:50], progress=False)
    x_bad = x.clone()
    x_bad[3, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        est.fit(theta, x_bad, progress=False)
    est.fit(theta, x, progress=False, max_epochs=1)
    with pytest.raises(ValueError, match="theta must have shape"):
        est.log_ratio(torch.zeros(1, 3), x[:1])
    with pytest.raises(ValueError, match="x must have shape"):
        est.log_ratio(theta[:1], torch.zeros(1, 4))


@pytest.mark.slow
def test_bnre_is_more_conservative_than_nre_a():
    """Coverage of HPD regions of the MCMC posteriors, trained on the same 1000 simulations: BNRE's at or above
    nominal, and above NRE-A's."""
    theta, x = _simulate(1000, seed=10)
    test_theta, test_x = _simulate(200, seed=11)
    curves = {}
    for variant in ("nre_a", "bnre"):
        est = simgen.RatioEstimator(PRIOR, variant, device="cpu")
        est.fit(theta, x, seed=0, progress=False)
        post = est.posterior(num_chains=10, warmup=100, progress=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result = simgen.diagnostics.coverage(post, test_theta, test_x, num_samples=100, seed=0)
        curves[variant] = result.hpd - result.levels
    print({k: (float(v.mean()), float(v.min())) for k, v in curves.items()})
    assert float(curves["bnre"].min()) >= -0.05  # at or above nominal (200 test pairs: SE ≈ 0.035 at α = 0.5)
    assert float(curves["bnre"].mean()) > float(curves["nre_a"].mean())


# ------------------------------------------------------------------------------------------ config and CLI
def test_ratio_table_is_read_and_checked():
    from simgen.config import ConfigError, parse_config

    config, _ = parse_config('simulator = "two_moons"\n[ratio]\nmodel = "bnre"\noptions = { regularization = 10 }\n'
                             'training = { max_epochs = 5 }\n', build_simulator=False)
    assert config.ratio.enabled and config.ratio.model == "bnre" and config.ratio.options == {"regularization": 10}
    assert config.ratio.training["max_epochs"] == 5
    tre, _ = parse_config('simulator = "two_moons"\n[ratio]\nmodel = "tre"\noptions = { num_waymarks = 4 }\n',
                          build_simulator=False)
    assert tre.ratio.model == "tre" and tre.ratio.options == {"num_waymarks": 4}
    default, _ = parse_config('simulator = "two_moons"\n', build_simulator=False)
    assert not default.ratio.enabled and default.ratio.model == "nre"
    for text, key in (('model = "flow"', "ratio.model"),
                      ("model = 'nre_a'\noptions = { gamma = 2.0 }", "ratio.options"),
                      ("model = 'tre'\noptions = { num_waymarks = 0 }", "ratio.options"),
                      ("options = { device = 'cpu' }", "ratio.options"), ("mcmc = true", "ratio.mcmc"),
                      ("training = { max_epochs = 0 }", "ratio.training"), ('embedding = "cnn"', "ratio.embedding")):
        with pytest.raises(ConfigError) as err:
            parse_config(f'simulator = "two_moons"\n[ratio]\n{text}\n', build_simulator=False)
        assert err.value.key == key, text
    only_ratio, _ = parse_config('simulator = "two_moons"\n[posterior]\nenabled = false\n[ratio]\n',
                                 build_simulator=False)
    assert only_ratio.ratio.enabled and not only_ratio.posterior.enabled


def test_mcmc_options_are_read_and_checked():
    from simgen.config import ConfigError, parse_config

    config, _ = parse_config('simulator = "two_moons"\n[evaluation]\nmcmc = { method = "hmc", thin = 2, '
                             'init_ess = 20, max_init = 50000, target_accept = 0.8 }\n', build_simulator=False)
    assert config.mcmc == {"method": "hmc", "thin": 2, "init_ess": 20.0, "max_init": 50_000, "target_accept": 0.8}
    assert parse_config('simulator = "two_moons"\n', build_simulator=False)[0].mcmc == {}
    for text, key in (('method = "gibbs"', "evaluation.mcmc.method"), ("thin = 0", "evaluation.mcmc.thin"),
                      ("warmup = 5", "evaluation.mcmc.warmup"), ("init_ess = -1", "evaluation.mcmc.init_ess"),
                      ("target_accept = 1.5", "evaluation.mcmc.target_accept"),
                      ("num_init = 100, max_init = 10", "evaluation.mcmc.max_init"),
                      ("proposal = 3", "evaluation.mcmc.proposal"), ('proposal = ""', "evaluation.mcmc.proposal"),
                      ("prior_weight = 1", "evaluation.mcmc.prior_weight")):
        with pytest.raises(ConfigError) as err:
            parse_config(f'simulator = "two_moons"\n[evaluation]\nmcmc = {{ {text} }}\n', build_simulator=False)
        assert err.value.key == key, text
    config, _ = parse_config('simulator = "two_moons"\n[evaluation]\nmcmc = { proposal = "posterior", '
                             'prior_weight = 0.2 }\n', build_simulator=False)
    assert config.mcmc == {"proposal": "posterior", "prior_weight": 0.2}
    with pytest.raises(ConfigError, match="not enabled") as err:  # the run's posterior, and there is none
        parse_config('simulator = "two_moons"\n[posterior]\nenabled = false\n[ratio]\n[evaluation]\n'
                     'mcmc = { proposal = "posterior" }\n', build_simulator=False)
    assert err.value.key == "evaluation.mcmc.proposal"


def test_num_emulated_is_read_and_checked():
    from simgen.config import ConfigError, parse_config

    text = 'simulator = "two_moons"\n[posterior]\nnum_emulated = 5000\n[likelihood]\n'
    config, _ = parse_config(text, build_simulator=False)
    assert config.posterior.num_emulated == 5000 and config.likelihood.num_emulated is None
    alone, _ = parse_config('simulator = "two_moons"\n[posterior]\nnum_emulated = 0\n', build_simulator=False)
    assert alone.posterior.num_emulated == 0  # none; without [likelihood] a positive N fits the posterior's own
    for bad, message in ((text + "num_emulated = 10\n", "only \\[posterior\\]"),
                         ('simulator = "two_moons"\n[posterior]\nnum_emulated = -1\n[likelihood]\n', ">= 0")):
        with pytest.raises(ConfigError, match=message) as err:
            parse_config(bad, build_simulator=False)
        assert err.value.key.endswith("num_emulated")


def test_mcmc_options_resolve_the_proposal(tmp_path, two_moons_posterior, conjugate_emulator):
    from simgen.config import ConfigError
    from simgen.pipeline import mcmc_options

    assert mcmc_options({"thin": 2}) == {"thin": 2}
    assert mcmc_options({"proposal": "posterior"}, two_moons_posterior)["proposal"] is two_moons_posterior
    with pytest.raises(ConfigError, match="there is none here"):
        mcmc_options({"proposal": "posterior"})
    two_moons_posterior.save(tmp_path / "post.pt")
    loaded = mcmc_options({"proposal": "post.pt", "thin": 3}, base_dir=tmp_path)
    assert isinstance(loaded["proposal"], simgen.PosteriorEstimator) and loaded["thin"] == 3
    with pytest.raises(ConfigError, match="no model file"):
        mcmc_options({"proposal": "missing.pt"}, base_dir=tmp_path)
    conjugate_emulator.save(tmp_path / "emu.pt")
    with pytest.raises(ConfigError, match="holds a likelihood model"):
        mcmc_options({"proposal": str(tmp_path / "emu.pt")})


@pytest.mark.filterwarnings("ignore:MCMC may not have converged:RuntimeWarning")  # tiny budget, short chains
def test_run_train_and_sample_a_ratio_estimator(tmp_path, monkeypatch, two_moons_posterior):
    import json
    import textwrap

    from simgen.cli import main

    asked = []  # the MCMC options each ratio posterior was built with
    build = simgen.RatioEstimator.posterior
    monkeypatch.setattr(simgen.RatioEstimator, "posterior", lambda self, **kw: asked.append(kw) or build(self, **kw))

    config = tmp_path / "gl.toml"
    config.write_text(textwrap.dedent("""
        budget = "tiny"
        [simulator]
        name = "gaussian_linear"
        options = { dim = 2 }
        [posterior]
        enabled = false
        [ratio]
        model = "nre_a"
        [observations]
        theta = [[0.2, -0.3]]
        [evaluation]
        calibration = 0
        mcmc = { thin = 2, init_ess = 10 }
        [output]
        dir = "results"
    """))
    assert main(["run", str(config), "--threads", "1", "--quiet"]) == 0
    assert asked[-1]["thin"] == 2 and asked[-1]["init_ess"] == 10.0
    out = tmp_path / "results"
    row = json.loads((out / "summary.json").read_text())["observations_results"][0]
    assert 0.0 <= row["ratio_mcmc_c2st"] <= 1.0  # 200 draws of a tiny run: only that it ran
    assert isinstance(simgen.load(out / "ratio.pt"), simgen.RatioEstimator)
    model = tmp_path / "nre.pt"
    assert main(["train", "--store", str(out / "store.h5"), "--out", str(model), "--direction", "ratio",
                 "--model", "bnre", "--max-epochs", "2", "--config", str(config), "--quiet"]) == 0
    assert simgen.load(model).variant == "bnre"
    assert main(["train", "--store", str(out / "store.h5"), "--out", str(model), "--direction", "ratio",
                 "--model", "flow", "--quiet"]) == 2
    samples = tmp_path / "s.pt"
    assert main(["sample", "--model", str(model), "--x", "[[0.1, 0.2]]", "--num", "40", "--out", str(samples),
                 "--mcmc", '{"method": "slice", "thin": 1}', "--quiet"]) == 0
    assert torch.load(samples).shape == (1, 40, 2)
    assert asked[-1]["method"] == "slice" and asked[-1]["thin"] == 1
    # SIR from a saved posterior estimator of the same shapes (any will do: the weights correct it)
    two_moons_posterior.save(tmp_path / "q.pt")
    assert main(["sample", "--model", str(model), "--x", "[[0.1, 0.2]]", "--num", "40", "--out", str(samples),
                 "--mcmc", json.dumps({"proposal": str(tmp_path / "q.pt"), "prior_weight": 0.5}), "--quiet"]) == 0
    assert isinstance(asked[-1]["proposal"], simgen.PosteriorEstimator) and asked[-1]["prior_weight"] == 0.5
    assert main(["sample", "--model", str(model), "--x", "[[0.1, 0.2]]", "--out", str(samples), "--mcmc",
                 '{"proposal": "posterior"}', "--quiet"]) == 2  # no run, so no run's posterior
    # an unknown option is refused before anything runs
    assert main(["sample", "--model", str(model), "--x", "[[0.1, 0.2]]", "--out", str(samples), "--mcmc",
                 '{"steps": 3}', "--quiet"]) == 2
