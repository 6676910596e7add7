import pytest
import torch

from simgen import nets
from simgen.nets.time import FiLMResidualMLP, TimeEmbedding


def test_time_embedding_shape_and_distinct_times():
    emb = TimeEmbedding(features=12, frequencies=8)
    out = emb(torch.tensor([0.0, 0.001, 0.5, 1.0]))
    assert out.shape == (4, 12)
    assert torch.cdist(out, out).fill_diagonal_(1.0).min() > 0  # nearby times are told apart
    with pytest.raises(ValueError, match=r"times of shape \[n\]"):
        emb(torch.zeros(4, 1))
    with pytest.raises(ValueError, match="frequencies >= 2"):
        TimeEmbedding(frequencies=1)


def test_film_mlp_shapes_starts_at_zero_and_uses_time_and_context():
    torch.manual_seed(0)
    net = FiLMResidualMLP(3, context_features=2, hidden_features=16, num_blocks=2, time_features=8)
    y, t, c = torch.randn(5, 3), torch.rand(5), torch.randn(5, 2)
    assert torch.equal(net(y, t, c), torch.zeros(5, 3))  # zero output layer
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    out = net(y, t, c)
    assert out.shape == (5, 3)
    assert not torch.allclose(out, net(y, torch.rand(5), c))
    assert not torch.allclose(out, net(y, t, torch.randn(5, 2)))
    row = net(y[:1], t[:1], c[:1])  # rows are independent (no batch statistics)
    assert torch.allclose(row, out[:1], atol=1e-6)


def test_film_mlp_rejects_bad_inputs():
    net = FiLMResidualMLP(3, context_features=2, hidden_features=8)
    with pytest.raises(ValueError, match=r"y must have shape \[n, 3\]"):
        net(torch.zeros(4, 2), torch.zeros(4), torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"t must have shape \[4\]"):
        net(torch.zeros(4, 3), torch.zeros(4, 1), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="c must be given exactly"):
        net(torch.zeros(4, 3), torch.zeros(4), None)
    with pytest.raises(ValueError, match=r"c must have shape \[4, 2\]"):
        net(torch.zeros(4, 3), torch.zeros(4), torch.zeros(4, 3))
    uncond = FiLMResidualMLP(3, hidden_features=8)
    assert uncond(torch.zeros(4, 3), torch.zeros(4)).shape == (4, 3)


def test_time_networks_rebuild_from_their_config():
    for net in (TimeEmbedding(10, 4), FiLMResidualMLP(3, 2, hidden_features=8, num_blocks=1, time_features=6)):
        spec = nets.network_config(net)
        assert spec is not None and spec["name"] == net.name
        rebuilt = nets.build_network(spec)
        assert type(rebuilt) is type(net)
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in
                                                                          net.state_dict().items()}
