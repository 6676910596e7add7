import pytest
import torch

from simgen import nets


def test_mlp_and_residual_mlp_shapes():
    assert nets.MLP(3, 5, hidden_features=8, num_layers=3)(torch.randn(4, 3)).shape == (4, 5)
    res = nets.ResidualMLP(3, 5, hidden_features=8, num_blocks=2, context_features=2)
    assert res(torch.randn(4, 3), torch.randn(4, 2)).shape == (4, 5)


def test_networks_rebuild_from_their_config():
    for net in (nets.MLP(3, 2, hidden_features=4), nets.ResidualMLP(3, 2, hidden_features=4), nets.Flatten((2, 3))):
        spec = nets.network_config(net)
        rebuilt = nets.build_network(spec)
        assert type(rebuilt) is type(net)
        shapes = {k: v.shape for k, v in net.state_dict().items()}
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes


def test_user_modules_have_no_config_and_unknown_names_fail():
    assert nets.network_config(torch.nn.Linear(2, 2)) is None
    with pytest.raises(ValueError, match="unknown network"):
        nets.build_network({"name": "transformer", "config": {}})
    with pytest.raises(ValueError, match="activation"):
        nets.MLP(2, 2, activation="swishy")


def test_default_embedding_and_output_features():
    emb = nets.default_embedding("vector", (4,))
    assert nets.output_features(emb, (4,)) == 4
    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 3))
    assert nets.output_features(lin, (2, 3)) == 3
