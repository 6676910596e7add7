"""A model name stands for the family that suits the data: ``model="flow"`` on maps is the map flow."""

from __future__ import annotations

import torch
from torch.distributions import Independent, Uniform

import simgen
from simgen.models import Flow, MapFlow, model_for

PRIOR = Independent(Uniform(torch.zeros(1), torch.ones(1)), 1)


def test_model_for_maps_the_flow_to_the_map_flow_on_maps_only() -> None:
    assert model_for("flow", "map") == "mapflow"
    for kind in ("vector", "set", "sequence"):
        assert model_for("flow", kind) == "flow"
    assert model_for("diffusion", "map") == "diffusion"


def test_a_likelihood_flow_on_maps_is_a_map_flow_and_saves_as_one(tmp_path) -> None:
    g = torch.Generator().manual_seed(0)
    theta = torch.rand(64, 1, generator=g)
    x = theta[:, :, None] * torch.randn(64, 4, 4, generator=g)  # [n, 4, 4] maps
    est = simgen.LikelihoodEstimator(PRIOR, model="flow")
    est.fit(theta, x, max_epochs=1, progress=False, seed=0)
    assert isinstance(est.density.density, MapFlow)
    est.save(str(tmp_path / "m.pt"))
    loaded = simgen.load(str(tmp_path / "m.pt"))
    assert isinstance(loaded.density.density, MapFlow)
    torch.testing.assert_close(loaded.log_prob(x[:3], theta[:3]), est.log_prob(x[:3], theta[:3]))
    # a vector x keeps the flow on vectors; a posterior's y (θ) is a vector whatever x is
    flat = simgen.LikelihoodEstimator(PRIOR, model="flow")
    flat.fit(theta, x.reshape(64, 16), max_epochs=1, progress=False, seed=0)
    assert isinstance(flat.density.density, Flow)
    post = simgen.PosteriorEstimator(PRIOR, model="flow")
    post.fit(theta, x, max_epochs=1, progress=False, seed=0)
    assert isinstance(post.density.density, Flow)


def test_continuous_families_train_maps_on_small_batches() -> None:
    """A U-Net step costs in proportion to its batch: maps train on batches of at most 64 rows, vectors keep the
    trainer's defaults; the hook is a class method, so a model object answers the same."""
    from simgen.models import CNF, Diffusion

    for family in (CNF, Diffusion):
        assert family.training_defaults_for("map")["max_batch_size"] == 64
        assert "max_batch_size" not in family.training_defaults_for("vector")
    est = simgen.LikelihoodEstimator(PRIOR, model="diffusion")
    est.x_kind = "map"
    assert est.training_defaults()["max_batch_size"] == 64
    assert Flow.training_defaults_for("map") == Flow.training_defaults
    assert simgen.PosteriorEstimator(PRIOR, model=CNF()).training_defaults() == {}


def test_diffusion_on_maps_defaults_to_the_edm_schedule_and_records_it(tmp_path) -> None:
    """``Diffusion()`` resolves its schedule when it meets the data: EDM's noise levels and preconditioning on maps,
    the linear VP schedule on vectors; an explicit schedule is kept, and the saved file records the resolved one."""
    from simgen.models import Diffusion

    assert Diffusion().build((4, 4), 1).schedule == "edm"
    assert Diffusion().build((3,), 1).schedule == "linear"
    assert Diffusion(schedule="linear").build((4, 4), 1).schedule == "linear"
    g = torch.Generator().manual_seed(0)
    theta = torch.rand(32, 1, generator=g)
    x = theta[:, :, None] * torch.randn(32, 4, 4, generator=g)
    est = simgen.LikelihoodEstimator(PRIOR, model=Diffusion(channels=(4,)))
    est.fit(theta, x, max_epochs=1, progress=False, seed=0)
    assert est.density.density.schedule == "edm"
    est.save(str(tmp_path / "d.pt"))
    assert simgen.load(str(tmp_path / "d.pt")).density.density.schedule == "edm"
