import pytest
import torch

import simgen


def _gen():
    return torch.Generator().manual_seed(0)


def test_posterior_roundtrip(tmp_path, two_moons_posterior):
    path = tmp_path / "post.pt"
    two_moons_posterior.save(path)
    loaded = simgen.load(path)
    assert isinstance(loaded, simgen.PosteriorEstimator)
    x_obs = torch.tensor([0.1, 0.3])
    theta = torch.rand(20, 2) * 2 - 1
    assert torch.allclose(loaded.log_prob(theta, x_obs), two_moons_posterior.log_prob(theta, x_obs))
    expected = two_moons_posterior.sample(10, x_obs, generator=_gen())
    assert torch.equal(loaded.sample(10, x_obs, generator=_gen()), expected)
    assert loaded.history.epochs == two_moons_posterior.history.epochs
    # the file is plain data: loadable without unpickling code
    assert isinstance(torch.load(path, weights_only=True)["config"], str)


def test_emulator_roundtrip(tmp_path, conjugate_emulator):
    path = tmp_path / "emu.pt"
    conjugate_emulator.save(path)
    loaded = simgen.load(path)
    assert isinstance(loaded, simgen.LikelihoodEstimator)
    x, theta = torch.randn(5, 2), torch.randn(5, 2)
    assert torch.allclose(loaded.log_prob(x, theta), conjugate_emulator.log_prob(x, theta))


def test_an_estimator_without_linear_baseline_loads_as_such(tmp_path, conjugate, conjugate_data):
    from simgen.models import Flow

    emu = simgen.LikelihoodEstimator(conjugate.prior, Flow(transforms=1, hidden_features=8), linear_baseline=False)
    emu.fit(*conjugate_data, seed=0, progress=False, max_epochs=2)
    assert emu.density.residual is None
    emu.save(tmp_path / "emu.pt")
    loaded = simgen.load(tmp_path / "emu.pt")
    assert loaded.linear_baseline is False and loaded.density.residual is None
    x, theta = torch.randn(5, 2), torch.randn(5, 2)
    assert torch.allclose(loaded.log_prob(x, theta), emu.log_prob(x, theta))


def test_the_support_map_is_the_familys_unless_given_and_survives_saving(tmp_path, two_moons, two_moons_data):
    from simgen.models import Diffusion, Flow
    from simgen.transforms import ProbitBox

    assert simgen.PosteriorEstimator(two_moons.prior, "flow").support_map == "logit"
    assert simgen.PosteriorEstimator(two_moons.prior, "cnf").support_map == "probit"
    with pytest.raises(ValueError, match="support_map must be one of"):
        simgen.PosteriorEstimator(two_moons.prior, "flow", support_map="tanh")
    for family, support_map in ((Diffusion(hidden_features=16, num_blocks=1), None),
                                (Flow(transforms=1, hidden_features=8), "probit")):
        post = simgen.PosteriorEstimator(two_moons.prior, family, support_map=support_map)
        post.fit(*two_moons_data, seed=0, progress=False, max_epochs=1)
        assert isinstance(post.density.support.bijection, ProbitBox)
        post.save(tmp_path / "post.pt")
        loaded = simgen.load(tmp_path / "post.pt")
        assert loaded.support_map == "probit" and isinstance(loaded.density.support.bijection, ProbitBox)
        theta, x_obs = torch.rand(5, 2) * 2 - 1, torch.tensor([0.1, 0.3])
        assert torch.allclose(loaded.log_prob(theta, x_obs, generator=_gen()),
                              post.log_prob(theta, x_obs, generator=_gen()))


def test_tampered_truncated_and_foreign_files_fail_clearly(tmp_path, two_moons_posterior):
    path = tmp_path / "post.pt"
    two_moons_posterior.save(path)
    payload = torch.load(path, weights_only=True)
    key = next(iter(payload["state_dict"]))
    payload["state_dict"][key] = payload["state_dict"][key] + 1
    torch.save(payload, tmp_path / "tampered.pt")
    with pytest.raises(ValueError, match="corrupted or was modified"):
        simgen.load(tmp_path / "tampered.pt")

    data = path.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable simgen model"):
        simgen.load(tmp_path / "truncated.pt")

    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a simgen model file"):
        simgen.load(tmp_path / "foreign.pt")

    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(ValueError, match="format version 99"):
        simgen.load(tmp_path / "future.pt")
    with pytest.raises(FileNotFoundError):
        simgen.load(tmp_path / "missing.pt")


def test_custom_embedding_and_prior_must_be_passed_back(tmp_path, two_moons, two_moons_data):
    class Custom(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(2, 3)

        def forward(self, x):
            return torch.tanh(self.linear(x))

    class MyPrior(torch.distributions.Independent):
        pass

    prior = MyPrior(torch.distributions.Uniform(-torch.ones(2), torch.ones(2)), 1)
    post = simgen.PosteriorEstimator(prior, embedding=Custom())
    post.fit(*two_moons_data, seed=0, progress=False, max_epochs=1)
    path = tmp_path / "custom.pt"
    post.save(path)
    with pytest.raises(ValueError, match="custom embedding"):
        simgen.load(path)
    loaded = simgen.load(path, embedding=Custom())  # the subclassed prior is saved as Independent(Uniform)
    x_obs = torch.zeros(2)
    # (with the generator: a posterior that samples by importance estimates its evidence by drawing)
    assert torch.allclose(loaded.log_prob(torch.zeros(3, 2), x_obs, generator=torch.Generator().manual_seed(0)),
                          post.log_prob(torch.zeros(3, 2), x_obs, generator=torch.Generator().manual_seed(0)))

    from simgen.io import prior_to_json

    assert prior_to_json(torch.distributions.Gamma(torch.ones(2), torch.ones(2))) is None
