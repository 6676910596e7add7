import json
import math

import numpy as np
import pytest
import torch

import simgen
import simulators
from simgen.config import ConfigError, parse_config
from simgen.nets import PowerSpectrumEmbedding
from simgen.pipeline import (
    load_observations,
    make_embedding,
    make_observations,
    simulate_at,
)


@pytest.fixture(scope="module")
def maps():
    sim = simulators.get("cosmology_maps", n_pix=16)
    theta, x = simgen.simulate(sim, sim.prior, 300, seed=0, progress=False)
    return sim, theta, x


def test_power_spectrum_embedding_matches_the_binned_spectrum(maps):
    from simgen.diagnostics.maps import binned_power_spectrum

    sim, _, x = maps
    radial = PowerSpectrumEmbedding((16, 16), shells="radial")
    s = radial.spectrum(x[:5])
    assert s.shape == (5, 11)  # bins 1 … floor(16/√2 + ½) = 11, the corners included
    # bins 1 … N/2 are simgen.diagnostics.maps' bins: C_b = Δ² × mean |K|²/N²
    pixel = math.radians(5.0) / 16
    ref = binned_power_spectrum(x[:5]).double() / pixel**2
    torch.testing.assert_close(s[:, :8].double(), torch.log(ref), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="square maps"):
        PowerSpectrumEmbedding((16, 8))


def test_exact_shells_are_invariant_under_the_lattice_symmetries(maps):
    _, _, x = maps
    emb = PowerSpectrumEmbedding((16, 16))
    assert emb.shells == "exact" and emb.loc.shape == (41,)  # distinct |m|² ≠ 0 on the 16 × 16 grid
    s = emb.spectrum(x[:4])
    # rotations, reflections and periodic shifts keep every shell's power: the features are those of the field
    for moved in (torch.rot90(x[:4], 1, (1, 2)), x[:4].flip(2), torch.roll(x[:4], (3, 5), (1, 2))):
        torch.testing.assert_close(emb.spectrum(moved), s, rtol=1e-4, atol=1e-4)
    # shell means of |K|²/N²: their mode-weighted total is Parseval's sum (m = 0 left out)
    counts = (emb.average > 0).sum(0).double()
    k = torch.fft.fft2(x[:4].double())
    power = (k.real**2 + k.imag**2) / 256
    total = (s.double().exp() * counts).sum(1)
    torch.testing.assert_close(total, power.flatten(1)[:, 1:].sum(1), rtol=1e-4, atol=0)
    emb.calibrate(x)
    z = (emb.spectrum(x) - emb.loc) / emb.scale
    torch.testing.assert_close(z.mean(0), torch.zeros(41), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(41), atol=1e-4, rtol=0)
    assert emb(x[:7]).shape == (7, 32)


def test_a_seeded_embedding_repeats_and_leaves_the_random_state_alone(maps):
    # an estimator takes a given embedding as it is: a seeded run repeats only if its embedding does
    _, _, x = maps
    state = torch.get_rng_state()
    a, b = (make_embedding("power_spectrum", x, "map", seed=3) for _ in range(2))
    assert torch.equal(torch.get_rng_state(), state)
    other = make_embedding("power_spectrum", x, "map", seed=4)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    assert any(not torch.equal(p, r) for p, r in zip(a.parameters(), other.parameters(), strict=True))


def test_posterior_with_power_spectrum_embedding_saves_and_loads(maps, tmp_path):
    sim, theta, x = maps
    emb = make_embedding("power_spectrum", x, "map")
    post = simgen.PosteriorEstimator(sim.prior, "flow", embedding=emb, simulator=sim)
    post.fit(theta, x, seed=0, progress=False, max_epochs=2)
    post.save(tmp_path / "post.pt")
    loaded = simgen.load(tmp_path / "post.pt")
    assert isinstance(loaded.density.embedding, PowerSpectrumEmbedding)
    torch.testing.assert_close(loaded.log_prob(theta[:20], x[0]), post.log_prob(theta[:20], x[0]))
    with pytest.raises(ConfigError, match="square maps"):
        make_embedding("power_spectrum", torch.zeros(10, 5), "vector")
    assert make_embedding("auto", x, "map") is None


def test_load_observations_checks_shape_and_formats(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
    np.save(tmp_path / "x.npy", x)
    torch.save(torch.from_numpy(x[0]), tmp_path / "x.pt")
    (tmp_path / "x.json").write_text(json.dumps({"x": x.tolist()}))
    assert load_observations(tmp_path / "x.npy", (2, 2)).shape == (3, 2, 2)
    assert load_observations(tmp_path / "x.pt", (2, 2)).shape == (1, 2, 2)  # a single row
    assert load_observations(tmp_path / "x.json", None).shape == (3, 2, 2)
    with pytest.raises(ConfigError, match=r"expected \[m, 4\]") as e:
        load_observations(tmp_path / "x.npy", (4,))
    assert e.value.key == "observations.file"
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="cannot read"):
        load_observations(tmp_path / "bad.json", None)


def test_observations_are_seeded_and_follow_the_config():
    sim = simulators.get("two_moons")
    config, _ = parse_config('simulator = "two_moons"\nseed = 3\n[observations]\ntheta = [[0.1, 0.2], [0.0, 0.0]]\n')
    obs = make_observations(config, sim, (2,))
    assert obs.x.shape == (2, 2) and torch.equal(obs.theta, torch.tensor([[0.1, 0.2], [0.0, 0.0]]))
    torch.testing.assert_close(obs.x, make_observations(config, sim, (2,)).x)  # reproducible
    held, _ = parse_config('simulator = "two_moons"\nseed = 3\n[observations]\nheld_out = 4\n')
    obs = make_observations(held, sim, (2,))
    assert obs.x.shape == (4, 2) and obs.theta.shape == (4, 2) and "held-out" in obs.source
    assert bool(torch.isfinite(sim.prior.log_prob(obs.theta)).all())


def test_simulate_at_seeds_callables_without_generator():
    calls = []

    def noisy(theta):
        calls.append(1)
        return theta + torch.randn_like(theta)

    theta = torch.zeros(5, 2)
    a, b = simulate_at(noisy, theta, 1), simulate_at(noisy, theta, 1)
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, simulate_at(noisy, theta, 2)) and len(calls) == 3


def test_a_posterior_without_the_runs_emulator_fits_its_own_for_emulated_pairs(conjugate, conjugate_data):
    """``[posterior] num_emulated = N`` without a ``[likelihood]`` table: the posterior fits an emulator on the
    simulations itself, says so, and trains on N pairs from it; ``num_emulated = 0`` trains on none."""
    from simgen.pipeline import fit_posterior

    theta, x = conjugate_data[0][:300], conjugate_data[1][:300]
    said: list[str] = []
    for n in (200, 0):
        config, _ = parse_config(f'simulator = "two_moons"\n[posterior]\nnum_emulated = {n}\n'
                                 'training = { max_epochs = 2 }\n', build_simulator=False)
        post = fit_posterior(config, conjugate, theta, x, progress=False, say=said.append)
        assert post.num_emulated == n and (post.emulator is not None) == bool(n)
    assert "and 200 emulated pairs from an emulator it fitted first (2 epochs" in said[0]
    assert "emulated" not in said[1]


@pytest.mark.parametrize("posterior, likelihood, own", [
    ("", "enabled = false\n", True),  # "auto" adds pairs at 10⁴ simulations, from its own emulator
    ("", "enabled = true\n", False),  # from the run's "auto" emulator
    ("", 'enabled = true\nmodel = "flow"\n', True),
    ("num_emulated = 0\n", "enabled = false\n", False),
    ('model = "flow"\n', "enabled = false\n", False),
    ("num_emulated = 500\n", "enabled = false\n", True),
    ("num_emulated = 500\n", 'enabled = true\nmodel = "flow"\n', False),
])
def test_the_forecast_counts_the_posteriors_own_emulator(posterior, likelihood, own):
    """``simgen run``'s up-front forecast counts a second capped training where ``[posterior]`` fits an emulator
    of its own for emulated pairs, and only there."""
    from simgen.pipeline import estimate_seconds, posterior_fits_emulator

    sim = simulators.get("two_moons")
    config, _ = parse_config('simulator = "two_moons"\n[simulation]\nnum_simulations = 10000\n'
                             f"[posterior]\ntraining = {{ max_time = 30 }}\n{posterior}[likelihood]\n{likelihood}")
    assert posterior_fits_emulator(config, sim, (2,)) is own
    assert estimate_seconds(config, sim)["posterior training"] == (70.0 if own else 35.0)


@pytest.mark.parametrize("posterior, importance", [
    ("", True),  # "auto" adds pairs at 10⁴ simulations and may sample by importance
    ('sample_with = "direct"\n', False),
    ("num_emulated = 0\n", False),
    ('model = "flow"\n', False),
    ('model = "flow"\nnum_emulated = 500\n', True),
])
def test_the_forecast_counts_importance_sampling(posterior, importance):
    """Where ``[posterior]`` may sample by importance, the forecast's checks count draws for every held-out and
    calibration observation."""
    from simgen.pipeline import estimate_seconds, posterior_may_sample_by_importance

    sim = simulators.get("two_moons")
    text = 'simulator = "two_moons"\n[simulation]\nnum_simulations = 10000\n[evaluation]\ncalibration = 100\n'
    config, _ = parse_config(text + f"[posterior]\n{posterior}", build_simulator=False)
    direct, _ = parse_config(text + '[posterior]\nsample_with = "direct"\nnum_emulated = 0\n', build_simulator=False)
    assert posterior_may_sample_by_importance(config, sim, (2,)) is importance
    extra = estimate_seconds(config, sim)["checks and report"] - estimate_seconds(direct, sim)["checks and report"]
    assert extra == pytest.approx(5.0 * config.held_out + 50.0 if importance else 0.0)
