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
