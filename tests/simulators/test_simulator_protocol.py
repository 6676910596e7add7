"""The simulator protocol (shapes, dtypes, seeding, validation) and the registry, on every registered task."""

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

import simulators
import simulators.base
from simulators import Simulator

TASKS = {
    "two_moons": (2, (2,)),
    "slcp": (5, (8,)),
    "gaussian_linear": (10, (10,)),
    "gaussian_mixture": (2, (2,)),
    "gaussian_linear_uniform": (10, (10,)),
    "gaussian_signal": (3, (20,)),
    "poisson_glm": (4, (12,)),
}
DISCRETE = {"poisson_glm": tuple(range(12))}  # the tasks whose x has integer-valued dimensions


def test_registry_lists_the_benchmark_tasks():
    assert set(TASKS) <= set(simulators.available())
    assert simulators.available() == sorted(simulators.available())


@pytest.mark.parametrize("name", sorted(TASKS))
def test_attributes(name):
    sim = simulators.get(name)
    d_theta, x_shape = TASKS[name]
    assert isinstance(sim, Simulator)
    assert sim.name == name
    assert sim.d_theta == d_theta == len(sim.parameter_names) == len(set(sim.parameter_names))
    assert sim.x_shape == x_shape
    assert sim.x_kind == "vector"
    assert sim.tractable
    assert sim.x_discrete == DISCRETE.get(name, ())
    assert isinstance(sim.prior, torch.distributions.Distribution)
    assert sim.prior.event_shape == (d_theta,)


def test_box_priors_are_sbi_box_uniform():
    from sbi.utils import BoxUniform

    boxes = [("two_moons", 1.0), ("slcp", 3.0), ("gaussian_mixture", 10.0), ("gaussian_linear_uniform", 1.0)]
    for name, bound in boxes:
        prior = simulators.get(name).prior
        assert isinstance(prior, BoxUniform)
        assert torch.equal(prior.support.base_constraint.upper_bound, torch.full(prior.event_shape, bound))


@pytest.mark.parametrize("name", sorted(TASKS))
def test_shapes_and_dtypes(name):
    sim = simulators.get(name)
    theta = sim.prior.sample((7,))
    x = sim(theta)
    assert x.shape == (7, *sim.x_shape) and x.dtype == torch.float32 and x.device.type == "cpu"
    assert torch.isfinite(x).all()
    assert sim(theta[:0]).shape == (0, *sim.x_shape)
    # array-likes and float64 input are accepted
    assert sim(theta.double().numpy()).dtype == torch.float32
    assert sim(theta.tolist()).shape == x.shape
    log_l = sim.log_likelihood(theta, x)
    assert log_l.shape == (7,) and log_l.dtype == torch.float64
    samples = sim.reference_posterior(x[0], 5, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (5, sim.d_theta) and samples.dtype == torch.float32
    batched = sim.reference_posterior_batched(x[:2], 3, generator=torch.Generator().manual_seed(0))
    assert batched.shape == (2, 3, sim.d_theta) and batched.dtype == torch.float32


@pytest.mark.parametrize("name", sorted(TASKS))
def test_seeding(name):
    sim = simulators.get(name)
    theta = sim.prior.sample((50,))
    x1 = sim(theta, generator=torch.Generator().manual_seed(3))
    x2 = sim(theta, generator=torch.Generator().manual_seed(3))
    x3 = sim(theta, generator=torch.Generator().manual_seed(4))
    assert torch.equal(x1, x2)
    assert not torch.equal(x1, x3)
    torch.manual_seed(11)
    y1 = sim(theta)
    torch.manual_seed(11)
    y2 = sim(theta)
    assert torch.equal(y1, y2)
    assert not torch.equal(y1, sim(theta))
    # the explicit generator is used instead of (and leaves alone) the global RNG
    torch.manual_seed(11)
    sim(theta, generator=torch.Generator().manual_seed(3))
    assert torch.equal(sim(theta), y1)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_reference_posterior_is_seeded(name):
    sim = simulators.get(name)
    x_obs = sim(sim.prior.sample((1,)), generator=torch.Generator().manual_seed(0))
    a = sim.reference_posterior(x_obs, 20, generator=torch.Generator().manual_seed(5))
    b = sim.reference_posterior(x_obs, 20, generator=torch.Generator().manual_seed(5))
    c = sim.reference_posterior(x_obs, 20, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_bad_theta_shape(name):
    sim = simulators.get(name)
    d = sim.d_theta
    for bad in (torch.zeros(d), torch.zeros(4, d + 1), torch.zeros(2, 3, d)):
        given = ", ".join(map(str, bad.shape))
        with pytest.raises(ValueError, match=rf"expected theta of shape \[n, {d}\].*got \[{given}\]"):
            sim(bad)
        with pytest.raises(ValueError, match="expected theta"):
            sim.log_likelihood(bad, torch.zeros(1, *sim.x_shape))


def test_bad_x_shapes():
    sim = simulators.get("two_moons")
    theta = torch.zeros(3, 2)
    with pytest.raises(ValueError, match=r"expected x of shape \[n, 2\], got \[3, 3\]"):
        sim.log_likelihood(theta, torch.zeros(3, 3))
    with pytest.raises(ValueError, match="theta has 3 rows and x has 2"):
        sim.log_likelihood(theta, torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"expected x_obs of shape \[2\] or \[m, 2\]"):
        sim.reference_posterior(torch.zeros(3), 10)
    with pytest.raises(ValueError, match="expected x_obs"):
        sim.reference_posterior(torch.zeros(0, 2), 10)
    with pytest.raises(ValueError, match="num_samples must be a positive integer, got 0"):
        sim.reference_posterior(torch.zeros(2), 0)


def test_log_likelihood_broadcasts_one_row():
    sim = simulators.get("slcp")
    theta = sim.prior.sample((4,))
    x = sim(theta)
    full = sim.log_likelihood(theta, x[:1].expand(4, -1))
    assert torch.equal(sim.log_likelihood(theta, x[:1]), full)
    assert torch.equal(sim.log_likelihood(theta[:1], x), sim.log_likelihood(theta[:1].expand(4, -1), x))
    assert torch.equal(sim.log_likelihood(theta.numpy(), x[:1].numpy()), full)


def test_single_observation_shapes_agree():
    sim = simulators.get("gaussian_mixture")
    x = torch.tensor([0.5, -1.0])
    a = sim.reference_posterior(x, 50, generator=torch.Generator().manual_seed(0))
    b = sim.reference_posterior(x[None], 50, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_unknown_name_lists_available():
    message = r"unknown simulator 'nope'; available: .*gaussian_linear.*two_moons"
    with pytest.raises(ValueError, match=message):
        simulators.get("nope")


def test_options_are_passed_to_the_factory():
    sim = simulators.get("gaussian_linear", dim=3)
    assert sim.d_theta == 3 and sim.x_shape == (3,)
    assert sim(torch.zeros(2, 3)).shape == (2, 3)
    with pytest.raises(TypeError):
        simulators.get("two_moons", dim=3)


class _Noise(Simulator):
    """A minimal intractable simulator: x = θ + ε."""

    name = "noise"
    parameter_names = ["a"]
    x_shape = (1,)

    def __init__(self, scale: float = 1.0):
        self.prior = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(1), 1.0), 1)
        self.scale = scale

    def _simulate(self, theta, generator):
        return theta + self.scale * torch.randn(theta.shape, generator=generator)


def test_register_custom_simulator(monkeypatch):
    monkeypatch.setattr(simulators.base, "_REGISTRY", dict(simulators.base._REGISTRY))
    simulators.register("noise", _Noise)
    assert "noise" in simulators.available()
    sim = simulators.get("noise", scale=0.0)
    assert torch.equal(sim([[1.5], [2.0]]), torch.tensor([[1.5], [2.0]]))
    simulators.register("noise", _Noise)  # registering the same factory again is harmless
    with pytest.raises(ValueError, match="already registered"):
        simulators.register("noise")(lambda: _Noise())

    @simulators.register("noise_2")
    def make():
        return _Noise(2.0)

    assert make is not None and simulators.get("noise_2").scale == 2.0


def test_intractable_simulator_errors():
    sim = _Noise()
    assert not sim.tractable
    with pytest.raises(NotImplementedError, match="'noise' has an intractable likelihood"):
        sim.log_likelihood(torch.zeros(1, 1), torch.zeros(1, 1))
    with pytest.raises(NotImplementedError, match="'noise' has no reference posterior"):
        sim.reference_posterior(torch.zeros(1), 10)


def test_numpy_rng_is_derived_from_torch():
    a = simulators.numpy_rng(torch.Generator().manual_seed(0)).normal(size=3)
    b = simulators.numpy_rng(torch.Generator().manual_seed(0)).normal(size=3)
    c = simulators.numpy_rng(torch.Generator().manual_seed(1)).normal(size=3)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    torch.manual_seed(0)
    d = simulators.numpy_rng().normal(size=3)
    torch.manual_seed(0)
    assert np.array_equal(d, simulators.numpy_rng().normal(size=3))


def test_package_never_imports_simgen():
    root = Path(simulators.__file__).parent
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n.split(".")[0] == "simgen" for n in names), f"{path.name} imports simgen"
