"""Estimators pick the map, sequence and set embeddings from the data's kind, train with them, save and load."""

import math

import pytest
import torch

import simgen
import simulators
from simgen import nets


@pytest.mark.parametrize("kind, shape, cls", [
    ("vector", (5,), nets.Flatten),
    ("map", (16, 16), nets.MapEmbedding),
    ("map", (2, 18, 18), nets.MapEmbedding),
    ("sequence", (100, 2), nets.SequenceEmbedding),
    ("set", (128, 4), nets.DeepSets),
])
def test_default_embedding_follows_the_kind(kind, shape, cls):
    net = nets.default_embedding(kind, shape)
    assert type(net) is cls
    out = net(torch.randn(3, *shape) if kind != "set" else torch.zeros(3, *shape))
    assert out.shape == (3, nets.output_features(net, shape)) and torch.isfinite(out).all()
    assert nets.network_config(net) is not None  # rebuilt on load


def test_default_set_embedding_reads_the_last_channel_as_the_mask():
    assert nets.default_embedding("set", (128, 4)).masked
    assert not nets.default_embedding("set", (20, 1)).masked  # one channel: nothing left to be a mask


def _round_trip(post, x_obs, tmp_path, name):
    gen = torch.Generator().manual_seed(0)
    samples = post.sample(50, x_obs, generator=gen)
    assert samples.shape == (50, 3) and torch.isfinite(samples).all()
    path = tmp_path / f"{name}.pt"
    post.save(str(path))
    loaded = simgen.load(str(path))
    assert type(loaded.density.embedding) is type(post.density.embedding)
    theta = samples[:5]
    assert torch.allclose(loaded.log_prob(theta, x_obs), post.log_prob(theta, x_obs), atol=1e-5)
    again = loaded.sample(50, x_obs, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(again, samples, atol=1e-5)
    return samples


def test_map_posterior_trains_samples_and_round_trips(tmp_path):
    sim = simulators.get("cosmology_maps", n_pix=16)
    theta, x = simgen.simulate(sim, sim.prior, num_simulations=128, seed=0, progress=False)
    assert x.shape == (128, 16, 16)
    post = simgen.PosteriorEstimator(sim.prior, model="flow")
    history = post.fit(theta, x, max_epochs=2, batch_size=64, seed=0, progress=False)
    assert type(post.density.embedding) is nets.MapEmbedding and post.x_kind == "map"
    assert history.epochs == 2 and all(map(math.isfinite, history.train_loss + history.validation_loss))
    samples = _round_trip(post, x[0], tmp_path, "map")
    assert torch.isfinite(sim.prior.log_prob(samples)).all()  # inside the prior's box


def test_set_posterior_trains_samples_and_round_trips(tmp_path):
    sim = simulators.get("collider", output="set")
    theta, x = simgen.simulate(sim, sim.prior, num_simulations=128, seed=0, progress=False)
    assert x.shape == (128, 128, 4)
    post = simgen.PosteriorEstimator(sim.prior, model="flow", simulator=sim)
    post.fit(theta, x, max_epochs=2, batch_size=64, seed=0, progress=False)
    assert type(post.density.embedding) is nets.DeepSets and post.x_kind == "set"
    # the context reaching the embedding is still a set: the mask survives standardisation
    standardized = post.density.c_standardize(x[:8].to(post.device))
    assert torch.equal(standardized[..., -1].cpu(), x[:8, :, -1])
    _round_trip(post, x[0], tmp_path, "set")


def test_sequence_posterior_trains_with_the_1d_cnn(tmp_path):
    sim = simulators.get("double_well", mode="trajectory", n_record=40)
    theta, x = simgen.simulate(sim, sim.prior, num_simulations=64, seed=0, progress=False)
    post = simgen.PosteriorEstimator(sim.prior, model="flow", simulator=sim)
    post.fit(theta, x, max_epochs=2, batch_size=32, seed=0, progress=False)
    assert type(post.density.embedding) is nets.SequenceEmbedding and post.x_kind == "sequence"
    samples = post.sample(20, x[0], generator=torch.Generator().manual_seed(0))
    assert samples.shape == (20, 2) and torch.isfinite(samples).all()


def test_sets_without_a_mask_channel_need_an_unmasked_embedding():
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(64, 2, generator=gen)
    x = theta[:, None, :] + torch.randn(64, 6, 2, generator=gen)  # six i.i.d. draws, no mask channel
    prior = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(2), torch.ones(2)), 1)
    with pytest.raises(ValueError, match="0/1 mask.*masked=False"):
        simgen.PosteriorEstimator(prior, model="flow", x_kind="set").fit(theta, x, max_epochs=1, progress=False)
    post = simgen.PosteriorEstimator(prior, model="flow", x_kind="set",
                                     embedding=nets.DeepSets((6, 2), out_features=8, masked=False))
    post.fit(theta, x, max_epochs=1, seed=0, progress=False)
    assert torch.isfinite(post.sample(10, x[0])).all()
