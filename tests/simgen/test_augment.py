"""Emulated pairs (simgen.estimators.augment) and a posterior trained on them beside simulated pairs."""

import pytest
import torch

import simgen
from simgen.diagnostics import c2st
from simgen.estimators.augment import emulated_pairs
from simgen.estimators.auto import Choice, emulated_for


def test_emulated_pairs_follow_the_prior_and_the_emulator(conjugate, conjugate_emulator):
    """θ ~ N(0, I), x | θ ~ N(θ, 0.25 I) for the conjugate simulator: the emulated pairs have the prior's θ and,
    as far as the emulator learned it, the simulator's x given θ (slope 1, residual spread 0.5)."""
    theta, x = emulated_pairs(conjugate_emulator, 4000, seed=0)
    assert theta.shape == (4000, 2) and x.shape == (4000, 2)
    assert torch.allclose(theta.mean(0), torch.zeros(2), atol=0.06) and torch.allclose(theta.std(0), torch.ones(2),
                                                                                       atol=0.05)
    for j in range(2):
        slope = float(torch.cov(torch.stack([theta[:, j], x[:, j]]))[0, 1] / theta[:, j].var())
        residual = float((x[:, j] - slope * theta[:, j]).std())
        assert abs(slope - 1) < 0.06 and abs(residual - conjugate.noise) < 0.05, (slope, residual)
    again = emulated_pairs(conjugate_emulator, 4000, seed=0)
    assert torch.equal(again[0], theta) and torch.equal(again[1], x)
    with pytest.raises(ValueError, match="positive int"):
        emulated_pairs(conjugate_emulator, 0)
    with pytest.raises(ValueError, match="fitted LikelihoodEstimator"):
        emulated_pairs(simgen.PosteriorEstimator(conjugate.prior), 10)
    with pytest.raises(ValueError, match="is not fitted"):
        emulated_pairs(simgen.LikelihoodEstimator(conjugate.prior), 10)


def test_non_finite_emulated_x_is_reported_and_set_aside(conjugate_emulator, monkeypatch):
    """An emulator draw that is NaN or inf never reaches the training pairs: it is dropped with a warning."""
    draw = conjugate_emulator.sample_batched

    def broken(n, theta, **kwargs):
        x = draw(n, theta, **kwargs)
        x[:3, 0, 1] = float("nan")
        x[3, 0, 0] = float("inf")
        return x

    monkeypatch.setattr(conjugate_emulator, "sample_batched", broken)
    with pytest.warns(RuntimeWarning, match="4 of 50 emulated x are not finite and were set aside"):
        theta, x = emulated_pairs(conjugate_emulator, 50, seed=0)
    assert theta.shape == (46, 2) and x.shape == (46, 2) and bool(torch.isfinite(x).all())


def test_a_posterior_from_few_simulations_learns_from_emulated_pairs(conjugate, conjugate_data, conjugate_emulator,
                                                                     tmp_path):
    """100 simulations alone give a poor posterior (without the linear-Gaussian start, which is this conjugate
    problem's exact answer); with 4,000 pairs from an emulator fitted on 3,000 it is close to the analytic one
    (and it says how many pairs it was trained on, after saving too)."""
    theta, x = conjugate_data[0][:100], conjugate_data[1][:100]
    x_obs = torch.tensor([0.6, -0.4])
    reference = conjugate.posterior_samples(x_obs, 2000)
    scores = {}
    for name, extra in (("plain", {}), ("emulated", {"emulator": conjugate_emulator, "num_emulated": 4000})):
        post = simgen.PosteriorEstimator(conjugate.prior, "flow", linear_baseline=False)
        post.fit(theta, x, seed=0, progress=False, max_epochs=40, **extra)
        scores[name] = c2st(post.sample(2000, x_obs, generator=torch.Generator().manual_seed(0)), reference)
    assert post.num_emulated == 4000
    assert scores["emulated"] <= 0.55 and scores["plain"] >= scores["emulated"] + 0.05, scores
    post.save(tmp_path / "post.pt")
    assert simgen.load(tmp_path / "post.pt").num_emulated == 4000


def test_auto_adds_emulated_pairs_where_measured():
    """``model="auto"``'s rule: 3 emulated pairs per simulated pair for a posterior of a vector x of up to 50
    features at 10³ to 2·10⁴ simulations, none elsewhere."""
    assert emulated_for("posterior", x_kind="vector", num_rows=1000) == 3000
    assert emulated_for("posterior", x_kind="vector", num_rows=20_000) == 60_000
    assert emulated_for("posterior", x_kind="vector", num_rows=5000, x_features=50) == 15_000
    for direction, kind, rows, features, iid in (
            ("posterior", "vector", 999, 2, False), ("posterior", "vector", 20_001, 2, False),
            ("posterior", "vector", 5000, 51, False), ("posterior", "map", 5000, 256, False),
            ("posterior", "vector", 5000, 2, True), ("likelihood", "vector", 5000, 2, False)):
        assert emulated_for(direction, x_kind=kind, num_rows=rows, x_features=features, iid=iid) == 0, (
            direction, kind, rows, features, iid)
    assert Choice.from_dict({"model": "flow"}).emulated == 0  # a choice saved before the field existed


def test_auto_fits_its_own_emulator(conjugate, conjugate_data, tmp_path):
    """At 1,200 simulations ``"auto"`` fits an emulator on them and trains on 3,600 emulated pairs too (its choice
    and the saved file say so); ``num_emulated=0`` and a named model add none; ``num_emulated=N`` without an
    emulator fits one."""
    theta, x = conjugate_data[0][:1200], conjugate_data[1][:1200]
    post = simgen.PosteriorEstimator(conjugate.prior)
    post.fit(theta, x, seed=0, progress=False, max_epochs=2)
    assert post.num_emulated == 3600 and post.choice.emulated == 3600 and "3600 emulated" in post.choice.reason
    assert isinstance(post.emulator, simgen.LikelihoodEstimator) and post.emulator.history.epochs == 2
    post.save(tmp_path / "post.pt")
    loaded = simgen.load(tmp_path / "post.pt")
    assert loaded.num_emulated == 3600 and loaded.choice.emulated == 3600 and loaded.emulator is None
    post.fit(theta, x, seed=0, progress=False, max_epochs=2, num_emulated=0)
    assert post.num_emulated == 0 and post.choice.emulated == 0 and post.emulator is None
    assert "(1200 training pairs)" in post.choice.reason
    named = simgen.PosteriorEstimator(conjugate.prior, "flow")
    named.fit(theta, x, seed=0, progress=False, max_epochs=2)
    assert named.num_emulated == 0 and named.emulator is None
    named.fit(theta[:300], x[:300], seed=0, progress=False, max_epochs=2, num_emulated=500)
    assert named.num_emulated == 500 and named.emulator.history.epochs == 2


def test_emulated_pairs_are_refused_where_they_do_not_apply(conjugate, conjugate_data, conjugate_emulator,
                                                            monkeypatch):
    theta, x = conjugate_data
    post = simgen.PosteriorEstimator(conjugate.prior, "flow")

    def no_fit(*args, **kwargs):
        raise AssertionError("an emulator was fitted for a count that is refused")

    monkeypatch.setattr("simgen.estimators.posterior.fit_emulator", no_fit)
    with pytest.raises(ValueError, match="num_emulated must be a positive int; got -1"):
        post.fit(theta, x, num_emulated=-1, progress=False)
    with pytest.raises(ValueError, match="not with a store, proposal="):
        post.fit(theta, x, emulator=conjugate_emulator, proposal=conjugate.prior, progress=False)
    with pytest.raises(ValueError, match=r"the emulator models x \[2\] given θ \[2\]"):
        post.fit(theta, x[:, :1], emulator=conjugate_emulator, progress=False)
