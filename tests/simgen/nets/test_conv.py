import json

import pytest
import torch

from simgen import nets


def test_resblock_starts_as_the_identity_and_takes_a_context():
    block = nets.ResBlock(8, context_features=3)
    h = torch.randn(2, 8, 5, 7)
    assert torch.equal(block(h, torch.randn(2, 3)), h)
    wider = nets.ResBlock(8, 12, context_features=3, groups=4)
    assert wider(h, torch.randn(2, 3)).shape == (2, 12, 5, 7)
    assert wider(h).shape == (2, 12, 5, 7)  # the context is optional at call time


def test_down_and_upsampling_shapes():
    h = torch.randn(2, 4, 9, 16)
    assert nets.Downsample(4)(h).shape == (2, 4, 5, 8)
    assert nets.Upsample(4)(h).shape == (2, 4, 18, 32)


@pytest.mark.parametrize("shape", [(16, 16), (13, 10), (3, 8, 12)])
def test_conv_encoder_and_decoder_shapes(shape):
    enc = nets.ConvEncoder(shape, 6, channels=(4, 8), context_features=2)
    x, c = torch.randn(3, *shape), torch.randn(3, 2)
    assert enc(x, c).shape == (3, 6)
    dec = nets.ConvDecoder(6, shape, out_channels=5, channels=(8, 4), context_features=2)
    assert dec(torch.randn(3, 6), c).shape == (3, 5, *shape[-2:])
    plain = nets.ConvEncoder(shape, 4, channels=(4,))  # a CNN embedding: no context
    assert plain(x).shape == (3, 4) and nets.output_features(plain, shape) == 4


def test_conv_networks_rebuild_from_their_config_and_check_their_context():
    for net in (nets.ConvEncoder((8, 8), 3, channels=(4, 8), context_features=2),
                nets.ConvDecoder(3, (2, 8, 8), channels=(8, 4))):
        rebuilt = nets.build_network(nets.network_config(net))
        assert type(rebuilt) is type(net)
        shapes = {k: v.shape for k, v in net.state_dict().items()}
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes
    with pytest.raises(ValueError, match="pass a context"):
        nets.ConvEncoder((8, 8), 3, context_features=2)(torch.randn(1, 8, 8))
    with pytest.raises(ValueError, match="pass a context"):
        nets.ConvDecoder(3, (8, 8), context_features=2)(torch.randn(1, 3))
    with pytest.raises(ValueError, match="map row"):
        nets.ConvEncoder((8,), 3)
    with pytest.raises(ValueError, match="channels"):
        nets.ConvDecoder(3, (8, 8), channels=())


# ----------------------------------------------------------------------------------------------- FiLM blocks
def test_film_resblock_starts_as_the_identity_and_its_context_scales_and_shifts():
    torch.manual_seed(0)
    block = nets.ResBlock(8, context_features=3, film=True)
    h, c = torch.randn(2, 8, 5, 7), torch.randn(2, 3)
    assert torch.equal(block(h, c), h)
    gamma = block.context.weight[:8]
    assert torch.count_nonzero(gamma) == 0 and torch.count_nonzero(block.context.bias[:8]) == 0
    with torch.no_grad():
        nn_init_(block)
    out = block(h, c)
    assert not torch.allclose(out, block(h, c + 1.0))  # the context reaches the output
    gamma, beta = block.context(c).chunk(2, dim=1)  # the block is h + conv2(SiLU(GN(conv1(SiLU(GN(h))))(1+γ)+β))
    z = block.norm2(block.conv1(block.act(block.norm1(h)))) * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]
    assert torch.allclose(out, h + block.conv2(block.act(z)), atol=1e-6)
    assert nets.ResBlock(8, context_features=3).context.out_features == 8  # the additive block keeps one bias


def test_resblock_in_one_dimension():
    block = nets.ResBlock(4, 6, context_features=2, dims=1, film=True)
    assert block(torch.randn(3, 4, 11), torch.randn(3, 2)).shape == (3, 6, 11)
    assert nets.Downsample(6, dims=1)(torch.randn(3, 6, 11)).shape == (3, 6, 6)
    with pytest.raises(ValueError, match="dims must be 1"):
        nets.ResBlock(4, dims=3)


def nn_init_(module: torch.nn.Module) -> None:
    """Give every zero-initialised weight random values, so that every path of a fresh network is active."""
    gen = torch.Generator().manual_seed(1)
    for p in module.parameters():
        if p.dim() > 0 and torch.count_nonzero(p) == 0:
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))


# ----------------------------------------------------------------------------------------------------- U-Net
@pytest.mark.parametrize("channels_in, size", [(1, (16, 16)), (3, (18, 18)), (1, (10, 14)), (3, (10, 14)), (2, (7, 9))])
def test_unet_keeps_the_shape_of_any_map(channels_in, size):
    torch.manual_seed(0)
    net = nets.UNet(channels_in, 5, channels=(8, 16, 16), blocks_per_level=1, groups=4)
    x, c = torch.randn(2, channels_in, *size), torch.randn(2, 5)
    out = net(x, c)
    assert out.shape == x.shape
    assert torch.count_nonzero(out) == 0  # the last convolution starts at zero
    with torch.no_grad():
        nn_init_(net)
    out = net(x, c)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_unet_conditioning_changes_the_output_and_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = nets.UNet(1, 4, channels=(8, 16), blocks_per_level=1, groups=4)
    with torch.no_grad():
        nn_init_(net)
    x, c = torch.randn(3, 1, 12, 12), torch.randn(3, 4)
    out = net(x, c)
    assert (out - net(x, c + torch.randn(3, 4))).abs().mean() > 1e-3 * out.abs().mean()
    # the rows do not talk to each other: changing row 0's condition leaves rows 1 and 2 alone
    c2 = c.clone()
    c2[0] += 1.0
    moved = net(x, c2)
    assert not torch.allclose(moved[0], out[0]) and torch.allclose(moved[1:], out[1:], atol=1e-6)
    x.requires_grad_(True)
    net(x, c).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    silent = [name for name, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert silent == []


def test_unet_output_is_cropped_from_the_padded_map():
    """On a non-multiple size the output is the crop of the padded map (translation-consistent interior)."""
    torch.manual_seed(0)
    net = nets.UNet(1, 2, channels=(4, 8, 8), blocks_per_level=1, attention=False, groups=4)
    with torch.no_grad():
        nn_init_(net)
    x, c = torch.randn(1, 1, 10, 14), torch.randn(1, 2)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))  # 12 x 16, a multiple of 4
    assert torch.allclose(net(x, c), net(padded, c)[..., 1:11, 1:15], atol=1e-5)


def test_unet_single_channel_takes_maps_without_a_channel_axis():
    net = nets.UNet(1, 3, channels=(8,), blocks_per_level=1, groups=4)
    assert net(torch.randn(2, 6, 6), torch.randn(2, 3)).shape == (2, 6, 6)
    unconditional = nets.UNet(2, 0, channels=(8, 8), blocks_per_level=1, groups=4)
    assert unconditional(torch.randn(2, 2, 6, 6)).shape == (2, 2, 6, 6)
    with pytest.raises(ValueError, match="cond=None"):
        unconditional(torch.randn(2, 2, 6, 6), torch.randn(2, 1))


def test_unet_rejects_bad_inputs_with_clear_messages():
    net = nets.UNet(3, 4, channels=(8, 16), blocks_per_level=1, groups=4)
    with pytest.raises(ValueError, match=r"\[n, 3, H, W\]; got \[2, 1, 8, 8\]"):
        net(torch.randn(2, 1, 8, 8), torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"\[n, 3, H, W\]; got \[2, 8, 8\]"):
        net(torch.randn(2, 8, 8), torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"cond \[n, 4\] with n = 2 rows of x; got \[2, 3\]"):
        net(torch.randn(2, 3, 8, 8), torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"got \[3, 4\]"):
        net(torch.randn(2, 3, 8, 8), torch.randn(3, 4))
    with pytest.raises(ValueError, match="got None"):
        net(torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="channels must be positive"):
        nets.UNet(1, 4, channels=())
    with pytest.raises(ValueError, match="in_channels >= 1"):
        nets.UNet(0, 4)


# --------------------------------------------------------------------------------------- map/sequence embeddings
@pytest.mark.parametrize("shape", [(16, 16), (3, 18, 18), (10, 14), (1, 9, 7)])
def test_map_embedding_shapes_and_gradients(shape):
    torch.manual_seed(0)
    net = nets.MapEmbedding(shape, out_features=7, channels=(8, 16), groups=4)
    x = torch.randn(4, *shape, requires_grad=True)
    out = net(x)
    assert out.shape == (4, 7) and net.out_features == 7 and nets.output_features(net, shape) == 7
    out.square().sum().backward()
    assert x.grad.abs().sum() > 0
    assert not torch.allclose(out[0], out[1])  # different maps, different summaries


def test_map_embedding_sees_the_amplitude():
    """Despite the global average (and the group norms), a map and the same map scaled up differ."""
    torch.manual_seed(0)
    net = nets.MapEmbedding((16, 16), out_features=4, channels=(8, 16), groups=4)
    with torch.no_grad():
        nn_init_(net)
    x = torch.randn(1, 16, 16)
    assert not torch.allclose(net(x), net(3 * x))


@pytest.mark.parametrize("shape", [(100, 2), (37, 3), (20,)])
def test_sequence_embedding_shapes_and_gradients(shape):
    torch.manual_seed(0)
    net = nets.SequenceEmbedding(shape, out_features=5, channels=(8, 16), groups=4)
    x = torch.randn(3, *shape, requires_grad=True)
    out = net(x)
    assert out.shape == (3, 5) and nets.output_features(net, shape) == 5
    out.sum().backward()
    assert x.grad.abs().sum() > 0


def test_embeddings_reject_wrong_shapes():
    with pytest.raises(ValueError, match=r"MapEmbedding expects maps \[n, 16, 16\]; got \[2, 1, 16, 16\]"):
        nets.MapEmbedding((16, 16))(torch.randn(2, 1, 16, 16))
    with pytest.raises(ValueError, match="map row"):
        nets.MapEmbedding((16,))
    with pytest.raises(ValueError, match=r"SequenceEmbedding expects sequences \[n, 10, 2\]; got \[2, 2, 10\]"):
        nets.SequenceEmbedding((10, 2))(torch.randn(2, 2, 10))
    with pytest.raises(ValueError, match="sequence row"):
        nets.SequenceEmbedding((4, 4, 2))


@pytest.mark.parametrize("make", [
    lambda: nets.UNet(2, 3, channels=(8, 16), blocks_per_level=1, groups=4),
    lambda: nets.MapEmbedding((2, 10, 14), out_features=6, channels=(8, 16), groups=4),
    lambda: nets.SequenceEmbedding((30, 2), out_features=6, channels=(8, 16), groups=4),
])
def test_new_conv_networks_rebuild_from_their_config_to_identical_outputs(make):
    torch.manual_seed(0)
    net = make()
    with torch.no_grad():
        nn_init_(net)
    spec = nets.network_config(net)
    assert spec is not None and json.loads(json.dumps(spec)) == spec
    rebuilt = nets.build_network(spec)
    assert type(rebuilt) is type(net)
    rebuilt.load_state_dict(net.state_dict())
    if isinstance(net, nets.UNet):
        x, c = torch.randn(2, 2, 10, 14), torch.randn(2, 3)
        assert torch.equal(rebuilt(x, c), net(x, c))
    else:
        x = torch.randn(2, *net.in_shape)
        assert torch.equal(rebuilt(x), net(x))


@pytest.mark.parametrize("channels", [(8, 16), (8, 16, 16)])
def test_circular_unet_commutes_with_torus_shifts_by_its_downsampling_factor(channels):
    """Circular padding: shifting a 16 × 16 map by multiples of 2^L (L downsamplings) shifts the output alike;
    zero padding does not."""
    torch.manual_seed(0)
    unets = {mode: nets.UNet(1, 4, channels=channels, blocks_per_level=1, attention=True, padding_mode=mode)
            for mode in ("circular", "zeros")}
    state = {k: v + 0.1 * torch.randn_like(v) if v.is_floating_point() else v
             for k, v in unets["zeros"].state_dict().items() if not k.endswith("circular_padding")}
    for net in unets.values():
        net.load_state_dict(state, strict=False)
    unets["circular"].set_padding_mode("circular")
    step = 2 ** (len(channels) - 1)
    x, cond = torch.randn(2, 1, 16, 16), torch.randn(2, 4)
    for shift in [(step, 0), (0, 3 * step), (2 * step, step)]:
        rolled = unets["circular"](torch.roll(x, shift, dims=(-2, -1)), cond)
        assert torch.allclose(rolled, torch.roll(unets["circular"](x, cond), shift, dims=(-2, -1)), atol=1e-5)
        zeros = unets["zeros"](torch.roll(x, shift, dims=(-2, -1)), cond)
        assert not torch.allclose(zeros, torch.roll(unets["zeros"](x, cond), shift, dims=(-2, -1)), atol=1e-3)
    with pytest.raises(ValueError, match="padding_mode"):
        nets.UNet(1, 4, padding_mode="reflect")
