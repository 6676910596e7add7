import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import pytest
import torch
from sbi.utils import BoxUniform

import simgen
import simulators
from simgen.store import Store

PRIOR = BoxUniform(-torch.ones(2), torch.ones(2))


def noisy(theta, *, generator=None):
    return theta + torch.randn(theta.shape, generator=generator)


def flaky(theta, *, generator=None):
    """Raises for a whole batch holding θ₀ > 0.8; NaN rows where θ₁ > 0.8."""
    if (theta[:, 0] > 0.8).any():
        raise RuntimeError("solver did not converge")
    x = theta + 0.1 * torch.randn(theta.shape, generator=generator)
    x[theta[:, 1] > 0.8] = float("nan")
    return x


class Counting:
    """Wraps a simulator and counts the rows it was asked for."""

    x_shape = (2,)

    def __init__(self, fn):
        self.fn, self.rows = fn, 0

    def __call__(self, theta, *, generator=None):
        self.rows += theta.shape[0]
        return self.fn(theta, generator=generator)


def test_store_round_trip_equals_plain_run_and_keeps_metadata(tmp_path):
    path = tmp_path / "runs.h5"
    plain = simgen.simulate(noisy, PRIOR, 250, seed=3, chunk_size=100, progress=False)
    stored = simgen.simulate(noisy, PRIOR, 250, seed=3, chunk_size=100, progress=False, store=path,
                             metadata={"simulator_options": {"noise": 1.0}, "note": "test"})
    assert torch.equal(plain[0], stored[0]) and torch.equal(plain[1], stored[1])
    assert sorted(p.name for p in path.iterdir() if p.suffix == ".h5") == [f"chunk-00000{k}.h5" for k in range(3)]
    store = simgen.open_store(path)
    assert len(store) == 250 and store.complete and store.valid.all()
    assert torch.equal(store.load()[0], plain[0]) and torch.equal(store.x, plain[1])
    meta = store.metadata
    assert meta["seed"] == 3 and meta["chunk_size"] == 100 and meta["x_shape"] == [2] and meta["note"] == "test"
    assert meta["simulator"] == {"name": "noisy", "class": f"{noisy.__module__}.noisy", "options": {"noise": 1.0}}
    assert meta["proposal"]["type"] == "Independent" and meta["simgen_version"] == simgen.__version__
    assert "created" in meta and json.loads((path / "index.json").read_text())["num_simulations"] == 250
    assert torch.allclose(store.proposal_log_prob, PRIOR.log_prob(store.theta).double())


def test_extending_a_store_simulates_only_new_chunks_and_equals_one_run(tmp_path):
    path = tmp_path / "runs.h5"
    sim = Counting(noisy)
    first = simgen.simulate(sim, PRIOR, 250, seed=1, chunk_size=100, progress=False, store=path)
    assert sim.rows == 300  # the last chunk is simulated whole
    again = simgen.simulate(sim, PRIOR, 250, seed=1, chunk_size=100, progress=False, store=path)
    assert sim.rows == 300 and torch.equal(first[1], again[1])
    longer = simgen.simulate(sim, PRIOR, 420, seed=1, chunk_size=100, progress=False, store=path)
    assert sim.rows == 500
    direct = simgen.simulate(noisy, PRIOR, 420, seed=1, chunk_size=100, progress=False)
    assert torch.equal(longer[0], direct[0]) and torch.equal(longer[1], direct[1])
    assert len(simgen.open_store(path)) == 420


def test_failures_are_recorded_with_theta_and_error_and_left_out(tmp_path):
    path = tmp_path / "runs.h5"
    with pytest.warns(RuntimeWarning, match="simulations failed"):
        theta, x = simgen.simulate(flaky, PRIOR, 300, seed=0, chunk_size=50, progress=False, store=path)
    store = simgen.open_store(path)
    valid, all_theta = store.valid, store.theta
    bad = (all_theta[:, 0] > 0.8) | (all_theta[:, 1] > 0.8)
    assert torch.equal(valid, ~bad) and bad.any()
    failures = store.failures
    assert sorted(f.row for f in failures) == torch.nonzero(bad).flatten().tolist()
    for f in failures:
        assert f.theta == all_theta[f.row].tolist()
        assert f.error == ("RuntimeError" if f.theta[0] > 0.8 else "NonFinite")
        assert "solver" in f.message or "NaN" in f.message
    assert torch.isnan(store.x[~valid]).all()
    assert torch.equal(store.load()[0], theta) and torch.isfinite(x).all()


def test_a_store_refuses_another_campaign_and_return_data_false(tmp_path):
    path = tmp_path / "runs.h5"
    store = simgen.simulate(noisy, PRIOR, 100, seed=0, chunk_size=50, progress=False, store=path, return_data=False)
    assert isinstance(store, Store) and len(store) == 100
    with pytest.raises(ValueError, match="different campaign: its seed"):
        simgen.simulate(noisy, PRIOR, 100, seed=1, chunk_size=50, progress=False, store=path)
    with pytest.raises(ValueError, match="chunk_size"):
        simgen.simulate(noisy, PRIOR, 100, seed=0, chunk_size=20, progress=False, store=path)
    with pytest.raises(ValueError, match="proposal"):
        simgen.simulate(noisy, BoxUniform(-2 * torch.ones(2), torch.ones(2)), 100, chunk_size=50, progress=False,
                        store=path)
    with pytest.raises(ValueError, match="needs store"):
        simgen.simulate(noisy, PRIOR, 100, return_data=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="not a simgen store"):
        simgen.simulate(noisy, PRIOR, 100, store=tmp_path / "other", progress=False)
    with pytest.raises(FileNotFoundError):
        simgen.open_store(tmp_path / "nothing")


def test_maps_of_any_shape_round_trip(tmp_path):
    def maps(theta, *, generator=None):
        return theta[:, :1, None, None] * torch.ones(theta.shape[0], 3, 4, 5) + torch.randn(theta.shape[0], 3, 4, 5,
                                                                                            generator=generator)

    stored = simgen.simulate(maps, PRIOR, 30, seed=0, chunk_size=8, progress=False, store=tmp_path / "maps")
    store = simgen.open_store(tmp_path / "maps")
    assert store.x.shape == (30, 3, 4, 5) and store.metadata["x_shape"] == [3, 4, 5]
    assert torch.equal(store.x, stored[1]) and torch.equal(stored[1], simgen.simulate(maps, PRIOR, 30, seed=0,
                                                                                      chunk_size=8, progress=False)[1])


def test_a_damaged_chunk_file_is_simulated_again_on_resume(tmp_path):
    path = tmp_path / "runs.h5"
    first = simgen.simulate(noisy, PRIOR, 300, seed=0, chunk_size=100, progress=False, store=path)
    (path / "chunk-000001.h5").write_bytes(b"\x89HDF\r\n")  # what a machine crash can leave behind
    with pytest.warns(RuntimeWarning, match=r"removed 1 damaged chunk file.*\[1\]"):
        again = simgen.simulate(noisy, PRIOR, 300, seed=0, chunk_size=100, progress=False, store=path)
    assert torch.equal(first[1], again[1])


def test_all_failed_chunk_and_unknown_shape_are_stored(tmp_path):
    calls = []

    def picky(theta, *, generator=None):  # no x_shape attribute; its first 21 calls (all of chunk 0) fail
        calls.append(1)
        if len(calls) <= 21:
            raise RuntimeError("not warmed up")
        return theta * 2

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        store = simgen.simulate(picky, PRIOR, 40, seed=0, chunk_size=20, progress=False, store=tmp_path / "s",
                                return_data=False)
    assert store.x.shape == (40, 2) and not store.valid[:20].any()


_KILLED_CAMPAIGN = textwrap.dedent(
    """
    import sys, time
    import simgen, simulators

    sim = simulators.get("two_moons")
    original = sim._simulate
    def slow(theta, generator):
        time.sleep(0.15)
        return original(theta, generator)
    sim._simulate = slow  # same simulator, same results: only slower, so the test can kill it mid-way
    simgen.simulate(sim, sim.prior, 2000, seed=5, chunk_size=100, store=sys.argv[1], progress=False)
    """
)


def test_sigkill_mid_campaign_then_resume_equals_an_uninterrupted_run(tmp_path):
    path = tmp_path / "runs.h5"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", _KILLED_CAMPAIGN, str(path)], env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None:
            if path.is_dir() and len(list(path.glob("chunk-*.h5"))) >= 3:
                break
            time.sleep(0.02)
        assert child.poll() is None, "the campaign ended before it could be killed"
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    done = len(list(path.glob("chunk-*.h5")))
    assert 3 <= done < 20
    interrupted = simgen.open_store(path)
    assert not interrupted.complete and len(interrupted) == done * 100

    sim = simulators.get("two_moons")
    calls = []
    original = sim._simulate
    sim._simulate = lambda theta, generator: calls.append(theta.shape[0]) or original(theta, generator)
    resumed = simgen.simulate(sim, sim.prior, 2000, seed=5, chunk_size=100, store=path, progress=False)
    assert sum(calls) == (20 - done) * 100  # only the missing chunks ran
    fresh = simgen.simulate(simulators.get("two_moons"), sim.prior, 2000, seed=5, chunk_size=100, progress=False)
    assert torch.equal(resumed[0], fresh[0]) and torch.equal(resumed[1], fresh[1])
    assert simgen.open_store(path).complete and not list(path.glob(".chunk-*"))


# ------------------------------------------------------------------------------------ training from a store
def _conjugate_store(conjugate, path, prior=None, n=2000):
    prior = prior if prior is not None else conjugate.prior
    return simgen.simulate(conjugate, prior, n, seed=4, chunk_size=250, progress=False, store=path,
                           return_data=False)


def test_fit_from_a_store_in_memory_equals_fit_on_its_arrays(conjugate, tmp_path):
    store = _conjugate_store(conjugate, tmp_path / "runs.h5", n=600)
    a = simgen.PosteriorEstimator(conjugate.prior, "flow", device="cpu")
    a.fit(tmp_path / "runs.h5", seed=0, progress=False, max_epochs=2)
    b = simgen.PosteriorEstimator(conjugate.prior, "flow", device="cpu")
    b.fit(*store.load(), seed=0, progress=False, max_epochs=2)
    assert a.history.validation_loss == b.history.validation_loss
    assert a.x_kind == "vector"


def test_a_store_over_the_memory_budget_trains_by_streaming(conjugate, tmp_path, monkeypatch):
    path = tmp_path / "runs.h5"
    _conjugate_store(conjugate, path)
    in_memory = simgen.PosteriorEstimator(conjugate.prior, "flow", device="cpu")
    in_memory.fit(path, seed=0, progress=False, max_epochs=1)

    def no_loading(self):
        raise AssertionError("the streaming path must not load the store")

    monkeypatch.setattr(Store, "load", no_loading)
    post = simgen.PosteriorEstimator(conjugate.prior, "flow", device="cpu")
    history = post.fit(path, seed=0, progress=False, max_memory_gb=2e-5, max_epochs=25)  # 2 chunks per buffer
    assert history.num_train + history.num_validation == 2000 and 100 < history.num_validation < 300
    for name in ("y_standardize", "c_standardize"):  # one streaming pass gives the in-memory statistics
        streamed, loaded = getattr(post.density, name), getattr(in_memory.density, name)
        assert torch.allclose(streamed.loc, loaded.loc, atol=1e-5) and torch.allclose(streamed.scale, loaded.scale,
                                                                                      atol=1e-5)
    x_obs = torch.tensor([0.8, -0.4])
    samples = post.sample(2000, x_obs, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(samples.mean(0), x_obs / 1.25, atol=0.15)


def test_streaming_statistics_match_standardize_fit_for_maps():
    from simgen.estimators import _fit_streaming
    from simgen.transforms import Standardize

    y, c = torch.randn(300, 3, 4, 5) * 2 + 1, torch.randn(300, 6, 7) + 3
    ys, cs = Standardize((3, 4, 5), per_channel=True), Standardize((6, 7), per_channel=True)
    _fit_streaming(ys, cs, ((y[i : i + 70], c[i : i + 70]) for i in range(0, 300, 70)))
    yf, cf = Standardize((3, 4, 5), per_channel=True).fit(y), Standardize((6, 7), per_channel=True).fit(c)
    for a, b in ((ys, yf), (cs, cf)):
        assert torch.allclose(a.loc, b.loc, atol=1e-5) and torch.allclose(a.scale, b.scale, atol=1e-5)


def test_a_store_from_another_proposal_is_refused_unless_proposal_is_given(conjugate, tmp_path):
    normal = torch.distributions.Normal
    shifted = torch.distributions.Independent(normal(torch.tensor([1.0, -1.0]), 1.3 * torch.ones(2)), 1)
    path = tmp_path / "shifted.h5"
    _conjugate_store(conjugate, path, prior=shifted, n=3000)
    post = simgen.PosteriorEstimator(conjugate.prior, "flow", device="cpu")
    with pytest.raises(ValueError, match=r"not from this estimator's prior.*proposal=q"):
        post.fit(path, progress=False)
    with pytest.raises(ValueError, match="proposal= is not the distribution"):
        post.fit(path, progress=False, proposal=conjugate.prior)
    post.fit(path, proposal=shifted, seed=0, progress=False, max_epochs=40)
    samples = post.sample(3000, torch.tensor([0.5, -0.5]), generator=torch.Generator().manual_seed(1))
    # Importance weighting recovers the posterior under the N(0, I) prior, mean x / 1.25 = ±0.4; the
    # posterior under the proposal (what unweighted training learns) has mean ±0.565.
    assert torch.allclose(samples.mean(0), torch.tensor([0.4, -0.4]), atol=0.08)

    # The streaming path draws its rows with the same weights: an epoch's θ follow the prior, not the proposal.
    from simgen.store import StoreBatches

    source = StoreBatches(simgen.open_store(path), True, 0.1, seed=0, chunks_per_buffer=3,
                          weight_fn=post._importance(shifted))
    theta = torch.cat([y for y, _ in source.train_batches(256, torch.Generator().manual_seed(0))])
    assert theta.shape[0] == source.num_train and torch.allclose(theta.mean(0), torch.zeros(2), atol=0.1)
    assert torch.allclose(theta.std(0), torch.ones(2), atol=0.1)
