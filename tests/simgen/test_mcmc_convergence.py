"""split-R̂ and bulk ESS against ArviZ's implementation of the same definitions (Vehtari et al. 2021).

Both compute the rank-normalised split-R̂ (the larger of bulk and folded R̂) and the bulk ESS (Geyer's initial
monotone sequence on rank-normalised split chains) in float64 from the same formulas, so they must agree to
rounding: a relative tolerance of 1e-9 leaves room for the order of floating-point sums and nothing else. ArviZ
returns NaN for R̂ of a single chain (it asks for two); ours then compares the chain's two halves, as Stan does,
so single chains are compared on the ESS only.
"""

import math
import warnings

import numpy as np
import pytest
import torch

from simgen.mcmc import effective_sample_size, split_rhat

with warnings.catch_warnings():  # ArviZ announces its coming refactor with a FutureWarning on import
    warnings.simplefilter("ignore", FutureWarning)
    arviz = pytest.importorskip("arviz")  # a dev dependency (pyproject's `dev` extra)

RTOL = 1e-9


def ar1(num_chains, num_draws, rho, seed, offsets=None, scales=None):
    """AR(1) chains x_t = ρ x_{t−1} + √(1 − ρ²) ε_t started in the stationary N(0, 1): integrated
    autocorrelation time (1 + ρ)/(1 − ρ); ``offsets``/``scales`` per chain make chains that did not mix."""
    rng = np.random.default_rng(seed)
    eps = rng.standard_normal((num_chains, num_draws))
    x = np.empty_like(eps)
    x[:, 0] = eps[:, 0]
    for t in range(1, num_draws):
        x[:, t] = rho * x[:, t - 1] + math.sqrt(1 - rho**2) * eps[:, t]
    if scales is not None:
        x = x * np.asarray(scales, dtype=float)[:, None]
    if offsets is not None:
        x = x + np.asarray(offsets, dtype=float)[:, None]
    return x


CASES = {
    "iid": ar1(4, 1000, 0.0, 0),
    "ar1_rho0.5_odd_length": ar1(4, 1001, 0.5, 1),
    "ar1_rho0.9": ar1(4, 1000, 0.9, 2),
    "ar1_rho0.99": ar1(4, 2000, 0.99, 3),
    "anticorrelated_rho-0.6": ar1(3, 500, -0.6, 4),
    "one_chain_offset": ar1(4, 500, 0.3, 5, offsets=[0, 0, 0, 3]),
    "separate_modes": ar1(6, 400, 0.2, 6, offsets=[-3, -3, -3, 3, 3, 3]),
    "different_scales": ar1(4, 800, 0.2, 7, scales=[1, 1, 1, 4]),  # bulk R̂ ≈ 1, folded R̂ flags it
    "drifting": ar1(4, 400, 0.5, 8) + np.linspace(0, 3, 400)[None, :],
    "heavy_tailed": np.random.default_rng(9).standard_cauchy((4, 1000)),
    "ties": np.random.default_rng(10).poisson(2.0, (4, 600)).astype(float),
}


@pytest.mark.parametrize("name", list(CASES))
def test_split_rhat_equals_arviz_rank_rhat(name):
    chains = CASES[name]
    ours = float(split_rhat(torch.from_numpy(chains))[0])
    theirs = float(arviz.rhat(chains, method="rank"))
    assert ours == pytest.approx(theirs, rel=RTOL)


@pytest.mark.parametrize("name", list(CASES))
def test_bulk_ess_equals_arviz_bulk_ess(name):
    chains = CASES[name]
    ours = float(effective_sample_size(torch.from_numpy(chains))[0])
    theirs = float(arviz.ess(chains, method="bulk"))
    assert ours == pytest.approx(theirs, rel=RTOL)


def test_several_quantities_are_diagnosed_column_by_column_and_single_chains_agree_on_ess():
    draws = np.stack([CASES["ar1_rho0.9"], CASES["one_chain_offset"][:, :500].repeat(2, axis=1)], axis=2)
    r_hat, ess = split_rhat(draws), effective_sample_size(draws)
    for j in range(2):
        assert float(r_hat[j]) == pytest.approx(float(arviz.rhat(draws[:, :, j], method="rank")), rel=RTOL)
        assert float(ess[j]) == pytest.approx(float(arviz.ess(draws[:, :, j], method="bulk")), rel=RTOL)
    single = ar1(1, 1000, 0.7, 11)
    assert float(effective_sample_size(single)[0]) == pytest.approx(float(arviz.ess(single, method="bulk")), rel=RTOL)


def test_the_cases_exercise_what_they_claim():
    """The comparison above would be weak on easy chains only: check that the cases span mixed and non-mixed."""
    rhat = {k: float(split_rhat(v)[0]) for k, v in CASES.items()}
    assert rhat["iid"] < 1.01 and rhat["ar1_rho0.9"] < 1.05
    # rank normalisation bounds R̂ of separated chains (ranks, not distances, enter it)
    assert rhat["separate_modes"] > 1.5 and rhat["one_chain_offset"] > 1.2 and rhat["drifting"] > 1.2
    assert rhat["different_scales"] > 1.1  # the chain means agree: caught by the folded draws
    tau = 1.5 / 0.5  # (1 + ρ)/(1 − ρ) at ρ = 0.5
    assert float(effective_sample_size(CASES["ar1_rho0.5_odd_length"])[0]) == pytest.approx(4 * 1001 / tau, rel=0.15)
