"""The package layout's promises: former import paths and names keep working, registries are the one place a
family or an estimator is found, the likelihood vocabulary accepts its former spellings with a warning, and
every family's sampling goes through the same checks."""

from __future__ import annotations

import textwrap

import pytest
import torch

import simgen
from simgen import io, models
from simgen.config import parse_config


def test_former_import_paths_still_work():
    from simgen.executors import Dask, InProcess, LocalProcesses, make_executor  # noqa: F401
    from simgen.io import prior_from_json, prior_to_json  # noqa: F401
    from simgen.simulate import ChunkResult, SimulationFailure, chunk_seeds, simulate_chunk  # noqa: F401
    from simgen.store import Store, StoreBatches, describe_distribution, open_store  # noqa: F401
    from simgen.training import BatchSource, TensorBatches, TrainingConfig, split_indices, train  # noqa: F401

    assert callable(simgen.simulate) and simgen.simulate is simgen.campaign.simulate
    assert simgen.Store is simgen.campaign.Store


def test_model_registry_and_its_former_names():
    assert set(models.MODELS) >= {"flow", "vae", "cnf", "diffusion"}
    assert models.FAMILIES is models.MODELS
    assert isinstance(models.make_model("flow", {"transforms": 2}), models.Flow)
    with pytest.warns(DeprecationWarning, match="make_model"):
        assert isinstance(models.make_family("vae"), models.VAE)
    with pytest.raises(ValueError, match="'flow'"):
        models.make_model("glow")
    with pytest.raises(ValueError, match="taken"):

        @models.register_model
        class Impostor(models.Flow):
            family = "flow"


def test_estimators_register_themselves_for_loading():
    assert io.ESTIMATORS == {"posterior": simgen.PosteriorEstimator, "likelihood": simgen.LikelihoodEstimator,
                             "ratio": simgen.RatioEstimator, "joint": simgen.JointEstimator}


def test_likelihood_section_and_its_former_name():
    text = 'simulator = "two_moons"\n[{}]\nmodel = "flow"\nnum_train = 50\n'
    config, _ = parse_config(text.format("likelihood"))
    assert config.likelihood.enabled and config.likelihood.num_train == 50
    assert config.emulator is config.likelihood
    with pytest.warns(FutureWarning, match=r"\[likelihood\]"):
        former, _ = parse_config(text.format("emulator"))
    assert former.likelihood == config.likelihood
    with pytest.raises(ValueError, match="former name"):
        parse_config(textwrap.dedent(text.format("likelihood") + "[emulator]\nmodel = 'vae'\n"))


def test_pipeline_keeps_the_former_names():
    from simgen import pipeline

    with pytest.warns(FutureWarning, match="fit_likelihood"), pytest.raises(TypeError):
        pipeline.fit_emulator()
    with pytest.warns(FutureWarning, match="check_likelihood"), pytest.raises(TypeError):
        pipeline.check_emulator()


@pytest.mark.parametrize("family", sorted(f for f, cls in models.MODELS.items() if "vector" in cls.data_kinds))
def test_sampling_checks_are_shared(family):
    # every family samples through ConditionalDensity.sample, which checks n and the context once for all
    assert models.MODELS[family].sample is models.ConditionalDensity.sample
    density = models.make_model(family).build((2,), 3)
    c = torch.zeros(4, 3)
    assert density.sample(5, c, generator=torch.Generator().manual_seed(0)).shape == (4, 5, 2)
    with pytest.raises(ValueError, match="positive int"):
        density.sample(0, c)
    with pytest.raises(ValueError, match="context"):
        density.sample(5, None)
    assert density.device == torch.device("cpu") and density.standardize_y in (True, False)
    density.on_epoch(0)  # every family has the hook


def test_cli_trains_a_likelihood_under_both_names(tmp_path):
    import simulators
    from simgen.cli import main

    sim = simulators.get("two_moons")
    simgen.simulate(sim, sim.prior, 200, store=tmp_path / "s.h5", progress=False, return_data=False)
    args = ["train", "--store", str(tmp_path / "s.h5"), "--max-epochs", "1", "--threads", "1", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "a.pt"), "--direction", "likelihood"]) == 0
    with pytest.warns(FutureWarning, match="--direction likelihood"):
        assert main([*args, "--out", str(tmp_path / "b.pt"), "--direction", "emulator"]) == 0
    assert simgen.load(tmp_path / "b.pt").direction == "likelihood"
