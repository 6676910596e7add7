"""Convolutional building blocks for maps ``[n, H, W]`` / ``[n, C, H, W]``, shared by every family.

The blocks are the usual ones of image generative models — a pre-activation residual block with an additive
context (the DDPM / U-Net ResNet block: Ho et al. 2020, arXiv:2006.11239), a strided-convolution downsampler and
a nearest-neighbour upsampler — so that an encoder, a decoder, a U-Net or a CNN embedding are all stacks of the
same three modules. :class:`ConvEncoder` maps a map to a feature vector, :class:`ConvDecoder` a feature vector to
a map; both take an optional context ``[n, context_features]`` injected into every residual block.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["ResBlock", "Downsample", "Upsample", "ConvEncoder", "ConvDecoder", "map_channels"]


def map_channels(shape: Sequence[int]) -> tuple[int, int, int]:
    """``(C, H, W)`` of a map row of shape ``(H, W)`` (one channel) or ``(C, H, W)``."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 2:
        return (1, *shape)
    if len(shape) == 3:
        return shape
    raise ValueError(f"a map row must have shape (H, W) or (C, H, W); got {shape}")


def _groups(channels: int, groups: int) -> int:
    """The largest divisor of ``channels`` that is at most ``groups`` (GroupNorm needs a divisor)."""
    return max(g for g in range(1, min(groups, channels) + 1) if channels % g == 0)


class ResBlock(nn.Module):
    r"""Pre-activation residual block h ↦ skip(h) + Conv(SiLU(GN(Conv(SiLU(GN(h))) + V c))).

    ``skip`` is the identity, or a 1×1 convolution when the channel count changes. The context c ``[n, f]`` (a
    time embedding, an embedded parameter) is projected to one bias per channel. The last convolution starts at
    zero, so that a fresh block is the identity (well-conditioned deep stacks).

    Args:
        in_channels, out_channels: channels in and out (``out_channels`` defaults to ``in_channels``).
        context_features: width of an optional context.
        groups: GroupNorm groups (the largest divisor of the channel count up to this).
        dropout: dropout before the second convolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        context_features: int | None = None,
        groups: int = 8,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        self.norm1 = nn.GroupNorm(_groups(in_channels, groups), in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(out_channels, groups), out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.context = nn.Linear(context_features, out_channels) if context_features else None
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.act = nn.SiLU()
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, h: Tensor, context: Tensor | None = None) -> Tensor:
        z = self.conv1(self.act(self.norm1(h)))
        if self.context is not None and context is not None:
            z = z + self.context(context)[:, :, None, None]
        z = self.conv2(self.dropout(self.act(self.norm2(z))))
        return self.skip(h) + z


class Downsample(nn.Module):
    """Halve H and W (rounding up) with a stride-2 3×3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, h: Tensor) -> Tensor:
        return self.conv(h)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour upsampling followed by a 3×3 convolution (no checkerboard artefacts)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h: Tensor) -> Tensor:
        return self.conv(nn.functional.interpolate(h, scale_factor=2.0, mode="nearest"))


class _Blocks(nn.Module):
    """``num_blocks`` residual blocks that all see the context."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, context_features: int | None,
                 groups: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            ResBlock(in_channels if i == 0 else out_channels, out_channels, context_features, groups)
            for i in range(num_blocks)
        )

    def forward(self, h: Tensor, context: Tensor | None) -> Tensor:
        for block in self.blocks:
            h = block(h, context)
        return h


class ConvEncoder(nn.Module):
    r"""CNN ``[n, *in_shape] -> [n, out_features]``: a 3×3 stem, then per level residual blocks and a
    stride-2 downsampling, then a linear read-out of the flattened feature map (and of the context).

    ``in_shape`` is ``(H, W)`` or ``(C, H, W)``; any H, W work (each level rounds up). Without a context it is
    a CNN embedding of maps.

    Args:
        in_shape: shape of one input row.
        out_features: output width.
        channels: channels of each level (one downsampling per level).
        blocks_per_level: residual blocks per level.
        context_features: width of an optional context ``[n, f]`` (added in every block and read out).
        groups: GroupNorm groups.
    """

    name = "conv_encoder"

    def __init__(
        self,
        in_shape: Sequence[int],
        out_features: int,
        channels: Sequence[int] = (16, 32),
        blocks_per_level: int = 1,
        context_features: int | None = None,
        groups: int = 8,
    ) -> None:
        super().__init__()
        _check_levels(channels, blocks_per_level)
        self.in_shape = tuple(int(s) for s in in_shape)
        c, h, w = map_channels(self.in_shape)
        self.out_features = out_features
        self.context_features = context_features
        self.stem = nn.Conv2d(c, channels[0], 3, padding=1)
        levels, downs, width = [], [], channels[0]
        for ch in channels:
            levels.append(_Blocks(width, ch, blocks_per_level, context_features, groups))
            downs.append(Downsample(ch))
            width, h, w = ch, math.ceil(h / 2), math.ceil(w / 2)
        self.levels, self.downs = nn.ModuleList(levels), nn.ModuleList(downs)
        self.out_norm = nn.GroupNorm(_groups(width, groups), width)
        self.act = nn.SiLU()
        self.readout = nn.Linear(width * h * w + (context_features or 0), out_features)
        self._config = dict(in_shape=list(self.in_shape), out_features=out_features, channels=list(channels),
                            blocks_per_level=blocks_per_level, context_features=context_features, groups=groups)

    def config(self) -> dict[str, Any]:
        return dict(self._config)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        h = self.stem(x.reshape(x.shape[0], *map_channels(self.in_shape)))
        for level, down in zip(self.levels, self.downs, strict=True):
            h = down(level(h, context))
        h = self.act(self.out_norm(h)).flatten(1)
        if self.context_features:
            if context is None:
                raise ValueError("this ConvEncoder was built with context_features: pass a context")
            h = torch.cat([h, context], dim=1)
        return self.readout(h)


class ConvDecoder(nn.Module):
    r"""Transposed counterpart of :class:`ConvEncoder`: ``[n, in_features] -> [n, out_channels, H, W]``.

    A linear layer (of the input and the context) fills a coarse ``channels[0] × ⌈H/2^L⌉ × ⌈W/2^L⌉`` map, each
    of the L levels applies residual blocks and doubles the resolution, a normalised 3×3 convolution gives
    ``out_channels`` and the result is cropped to ``out_shape``.

    Args:
        in_features: input width (e.g. a latent code).
        out_shape: ``(H, W)`` or ``(C, H, W)`` of the map the output is shaped for.
        out_channels: output channels (default: C of ``out_shape``; more for, e.g., a mean and a scale).
        channels: channels of each level, coarsest first.
        blocks_per_level: residual blocks per level.
        context_features: width of an optional context ``[n, f]``.
        groups: GroupNorm groups.
    """

    name = "conv_decoder"

    def __init__(
        self,
        in_features: int,
        out_shape: Sequence[int],
        out_channels: int | None = None,
        channels: Sequence[int] = (32, 16),
        blocks_per_level: int = 1,
        context_features: int | None = None,
        groups: int = 8,
    ) -> None:
        super().__init__()
        _check_levels(channels, blocks_per_level)
        self.out_shape = tuple(int(s) for s in out_shape)
        c, self.height, self.width = map_channels(self.out_shape)
        self.out_channels = out_channels or c
        scale = 2 ** len(channels)
        self.base = (channels[0], math.ceil(self.height / scale), math.ceil(self.width / scale))
        self.context_features = context_features
        self.input = nn.Linear(in_features + (context_features or 0), math.prod(self.base))
        levels, ups, width = [], [], channels[0]
        for ch in channels:
            levels.append(_Blocks(width, ch, blocks_per_level, context_features, groups))
            ups.append(Upsample(ch))
            width = ch
        self.levels, self.ups = nn.ModuleList(levels), nn.ModuleList(ups)
        self.out_norm = nn.GroupNorm(_groups(width, groups), width)
        self.act = nn.SiLU()
        self.output = nn.Conv2d(width, self.out_channels, 3, padding=1)
        self._config = dict(in_features=in_features, out_shape=list(self.out_shape), out_channels=out_channels,
                            channels=list(channels), blocks_per_level=blocks_per_level,
                            context_features=context_features, groups=groups)

    def config(self) -> dict[str, Any]:
        return dict(self._config)

    def forward(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        if self.context_features:
            if context is None:
                raise ValueError("this ConvDecoder was built with context_features: pass a context")
            z = torch.cat([z, context], dim=1)
        h = self.input(z).reshape(z.shape[0], *self.base)
        for level, up in zip(self.levels, self.ups, strict=True):
            h = up(level(h, context))
        h = self.output(self.act(self.out_norm(h)))
        return h[:, :, : self.height, : self.width]


def _check_levels(channels: Sequence[int], blocks_per_level: int) -> None:
    """Encoders and decoders need at least one level of positive width and one block per level."""
    if not channels or min(channels) < 1 or blocks_per_level < 1:
        raise ValueError(f"channels must be positive and blocks_per_level >= 1; got {channels}, {blocks_per_level}")
