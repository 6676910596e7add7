import json

import pytest
import torch

from simgen import nets


def padded_sets(n: int = 6, n_max: int = 10, features: int = 3, seed: int = 0) -> torch.Tensor:
    """Random sets ``[n, n_max, features + 1]``: row i holds i % n_max real elements first, then zero padding."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, n_max, features + 1)
    for i in range(n):
        k = 1 + i % (n_max - 1)
        x[i, :k, :features] = torch.randn(k, features, generator=gen)
        x[i, :k, -1] = 1.0
    return x


@pytest.mark.parametrize("pool", ["mean", "sum"])
def test_deepsets_is_invariant_to_the_order_of_the_elements_and_the_padding(pool):
    torch.manual_seed(0)
    net = nets.DeepSets((10, 4), out_features=5, hidden_features=16, pool=pool)
    x = padded_sets()
    out = net(x)
    assert out.shape == (6, 5) and torch.isfinite(out).all()
    perm = torch.stack([torch.randperm(10) for _ in range(6)])  # each set shuffled its own way, padding mixed in
    shuffled = torch.gather(x, 1, perm[:, :, None].expand_as(x))
    assert torch.allclose(net(shuffled), out, atol=1e-5)
    junk = x.clone()
    pad = x[..., -1] == 0
    junk[..., :-1][pad] = torch.tensor([1e6, float("nan"), -3.0])  # whatever the padding rows hold
    assert torch.equal(net(junk), out)


def test_deepsets_sees_the_elements_and_their_number():
    torch.manual_seed(0)
    net = nets.DeepSets((10, 4), out_features=5, hidden_features=16)
    x = padded_sets()
    out = net(x)
    moved = x.clone()
    moved[0, 0, 0] += 1.0  # a real element's feature
    assert not torch.allclose(net(moved)[0], out[0])
    # the same element twice: the mean is unchanged, the multiplicity is not, and the output sees it
    one, two = torch.zeros(1, 10, 4), torch.zeros(1, 10, 4)
    one[0, 0] = two[0, 0] = two[0, 1] = torch.tensor([0.3, -1.0, 2.0, 1.0])
    assert not torch.allclose(net(one), net(two))
    empty = torch.zeros(1, 10, 4)
    assert torch.isfinite(net(empty)).all()


def test_deepsets_without_a_mask_uses_every_element():
    torch.manual_seed(0)
    net = nets.DeepSets((7, 2), out_features=3, masked=False)
    x = torch.randn(4, 7, 2)
    out = net(x)
    assert out.shape == (4, 3)
    assert torch.allclose(net(x[:, torch.randperm(7)]), out, atol=1e-5)
    x[0, 3, 1] += 1.0  # the last channel is data, not a mask
    assert not torch.allclose(net(x)[0], out[0])


def test_deepsets_gradients_reach_the_real_elements_only():
    torch.manual_seed(0)
    net = nets.DeepSets((10, 4), out_features=5, hidden_features=16)
    x = padded_sets().requires_grad_(True)
    net(x).square().sum().backward()
    real = x.detach()[..., -1] == 1
    grad = x.grad[..., :-1].abs().sum(-1)
    assert (grad[real] > 0).all() and (grad[~real] == 0).all()
    assert all(p.grad is not None for p in net.parameters())


def test_deepsets_rebuilds_from_its_config_to_identical_outputs():
    torch.manual_seed(0)
    net = nets.DeepSets((10, 4), out_features=5, hidden_features=16, num_layers=3, pool="sum")
    spec = nets.network_config(net)
    assert json.loads(json.dumps(spec)) == spec and spec["name"] == "deepsets"
    rebuilt = nets.build_network(spec)
    rebuilt.load_state_dict(net.state_dict())
    x = padded_sets()
    assert torch.equal(rebuilt(x), net(x))
    assert nets.output_features(net, (10, 4)) == 5


def test_deepsets_rejects_bad_inputs_with_clear_messages():
    net = nets.DeepSets((10, 4))
    with pytest.raises(ValueError, match=r"DeepSets expects sets \[n, 10, 4\]; got \[2, 10, 3\]"):
        net(torch.zeros(2, 10, 3))
    with pytest.raises(ValueError, match=r"got \[10, 4\]"):
        net(torch.zeros(10, 4))
    not_a_mask = padded_sets()
    not_a_mask[..., -1] = 0.5
    with pytest.raises(ValueError, match="0/1 mask.*masked=False"):
        net(not_a_mask)
    with pytest.raises(ValueError, match=r"shape \(N_max, F\)"):
        nets.DeepSets((10,))
    with pytest.raises(ValueError, match="F >= 2"):
        nets.DeepSets((10, 1))
    with pytest.raises(ValueError, match="pool must be one of"):
        nets.DeepSets((10, 4), pool="max")


def test_set_standardize_uses_real_elements_keeps_the_mask_and_inverts():
    x = padded_sets(n=40, seed=1)
    x[..., 0] = x[..., 0] * 5 + 3 * x[..., -1]  # feature 0: mean 3, std 5 over real elements
    std = nets.SetStandardize((10, 4)).fit(x)
    real = x[..., -1] == 1
    rows = x[real][:, :3]
    assert torch.allclose(std.loc[:3], rows.mean(0), atol=1e-5)
    assert torch.allclose(std.scale[:3], rows.std(0), atol=1e-5)
    assert std.loc[3] == 0 and std.scale[3] == 1
    u = std(x)
    assert torch.equal(u[..., -1], x[..., -1])  # the mask passes unchanged
    assert torch.allclose(u[real][:, :3].mean(0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(std.inverse(u), x, atol=1e-5)
    expected = -10 * torch.log(std.scale[:3]).sum()
    assert torch.allclose(std.log_abs_det_jacobian(x), expected.expand(40))
    # statistics do not depend on the padding, and the streaming fit agrees with the one-shot fit
    junk = x.clone()
    junk[..., :-1][~real] = 7.0
    assert torch.allclose(nets.SetStandardize((10, 4)).fit(junk).loc, std.loc)
    streamed = nets.SetStandardize((10, 4)).update(x[:15]).update(x[15:]).finish()
    assert torch.allclose(streamed.loc, std.loc, atol=1e-6) and torch.allclose(streamed.scale, std.scale, atol=1e-6)


def test_set_standardize_checks_its_input():
    with pytest.raises(ValueError, match="no real element"):
        nets.SetStandardize((10, 4)).fit(torch.zeros(3, 10, 4))
    with pytest.raises(ValueError, match=r"SetStandardize expects sets \[n, 10, 4\]; got \[3, 10, 2\]"):
        nets.SetStandardize((10, 4)).fit(torch.zeros(3, 10, 2))
    x = torch.randn(5, 6, 2)  # no mask channel
    with pytest.raises(ValueError, match="0/1 mask"):
        nets.SetStandardize((6, 2)).fit(x)
    unmasked = nets.SetStandardize((6, 2), masked=False).fit(x)
    assert torch.allclose(unmasked.loc, x.reshape(-1, 2).mean(0), atol=1e-6)
