import warnings

import pytest
import torch
from sbi.utils import BoxUniform

import simgen
from simgen.simulate import chunk_seeds


def noisy(theta, *, generator=None):
    return theta + torch.randn(theta.shape, generator=generator)


PRIOR = BoxUniform(-torch.ones(2), torch.ones(2))


def test_shapes_and_dtypes():
    theta, x = simgen.simulate(noisy, PRIOR, 250, seed=0, chunk_size=100, progress=False)
    assert theta.shape == (250, 2) and x.shape == (250, 2)
    assert theta.dtype == x.dtype == torch.float32


def test_same_seed_same_data_and_only_seed_and_chunk_size_matter():
    a = simgen.simulate(noisy, PRIOR, 250, seed=3, chunk_size=100, progress=False)
    b = simgen.simulate(noisy, PRIOR, 250, seed=3, chunk_size=100, progress=False)
    longer = simgen.simulate(noisy, PRIOR, 400, seed=3, chunk_size=100, progress=False)
    other = simgen.simulate(noisy, PRIOR, 250, seed=4, chunk_size=100, progress=False)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(longer[0][:250], a[0]) and torch.equal(longer[1][:250], a[1])
    assert not torch.equal(a[0], other[0])


def test_chunk_seeds_follow_seedsequence_spawn():
    import numpy as np

    children = np.random.SeedSequence(7).spawn(5)
    theta_seq, sim_seq = children[3].spawn(2)
    assert chunk_seeds(7, 3) == (int(theta_seq.generate_state(1, np.uint64)[0] >> 1),
                                 int(sim_seq.generate_state(1, np.uint64)[0] >> 1))
    assert chunk_seeds(7, 3)[0] != chunk_seeds(7, 3)[1]


def test_plain_callables_are_seeded_and_leave_the_global_rng_alone():
    def plain(theta):
        return theta + torch.randn(theta.shape)

    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = simgen.simulate(plain, PRIOR, 50, seed=1, progress=False)
    after = torch.rand(1)
    b = simgen.simulate(plain, PRIOR, 50, seed=1, progress=False)
    assert torch.equal(before, after)
    assert torch.equal(a[1], b[1])


def test_failures_are_reported_and_left_out():
    def flaky(theta, *, generator=None):
        if (theta[:, 0] > 0.8).any():
            raise RuntimeError("solver did not converge")
        x = theta.clone()
        x[theta[:, 1] > 0.8] = float("nan")
        return x

    with pytest.warns(RuntimeWarning, match=r"simulations failed and were left out (?=.*RuntimeError)(?=.*NonFinite)"):
        theta, x = simgen.simulate(flaky, PRIOR, 500, seed=0, chunk_size=50, progress=False)
    assert torch.isfinite(x).all()
    assert (theta[:, 0] <= 0.8).all() and (theta[:, 1] <= 0.8).all()
    assert 300 < theta.shape[0] < 500  # neighbours of a failing row are kept


def test_failures_are_counted_by_kind_beyond_those_kept_whole(monkeypatch):
    """The warning's breakdown counts every failure, not only the ones kept whole for the message."""
    import importlib
    import re

    # the module, not the function of the same name that simgen.campaign exports
    monkeypatch.setattr(importlib.import_module("simgen.campaign.simulate"), "MAX_KEPT_FAILURES", 5)

    def half_nan(theta, *, generator=None):
        x = theta.clone()
        x[theta[:, 0] > 0.5] = float("nan")
        return x

    with pytest.warns(RuntimeWarning) as caught:
        theta, _ = simgen.simulate(half_nan, PRIOR, 400, seed=0, chunk_size=50, progress=False)
    message = str(caught[0].message)
    failed = int(re.match(r"(\d+) of 400 simulations failed", message).group(1))
    assert failed == 400 - theta.shape[0] > 5
    assert f"({failed} NonFinite" in message, message


def test_wrong_shapes_are_failures():
    def ragged(theta, *, generator=None):
        if theta.shape[0] > 1:
            raise ValueError("batch mode broken")
        return theta if theta[0, 0] > 0 else torch.zeros(1, 3)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        theta, x = simgen.simulate(ragged, PRIOR, 40, seed=0, chunk_size=20, progress=False)
    assert x.shape[1:] == (2,) and (theta[:, 0] > 0).all()
    assert any("ShapeError" in str(w.message) for w in caught)


def test_all_failures_and_bad_arguments_raise():
    def broken(theta, *, generator=None):
        raise OSError("executable not found")

    with pytest.raises(ValueError, match="all 10 simulations failed.*executable not found"):
        simgen.simulate(broken, PRIOR, 10, progress=False)
    with pytest.raises(ValueError, match="num_simulations"):
        simgen.simulate(noisy, PRIOR, 0)
    with pytest.raises(ValueError, match="prior"):
        simgen.simulate(noisy, "uniform", 10)
    with pytest.raises(ValueError, match="chunk_size"):
        simgen.simulate(noisy, PRIOR, 10, chunk_size=0)
