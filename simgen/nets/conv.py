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

__all__ = [
    "ResBlock",
    "Downsample",
    "Upsample",
    "SelfAttention",
    "ConvEncoder",
    "ConvDecoder",
    "UNet",
    "MapEmbedding",
    "SequenceEmbedding",
    "map_channels",
]


def map_channels(shape: Sequence[int]) -> tuple[int, int, int]:
    """``(C, H, W)`` of a map row of shape ``(H, W)`` (one channel) or ``(C, H, W)``."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 2:
        return (1, *shape)
    if len(shape) == 3:
        return shape
    raise ValueError(f"a map row must have shape (H, W) or (C, H, W); got {shape}")


def _conv(dims: int) -> type[nn.Module]:
    """``nn.Conv2d`` for maps (``dims=2``), ``nn.Conv1d`` for sequences (``dims=1``)."""
    if dims == 2:
        return nn.Conv2d
    if dims == 1:
        return nn.Conv1d
    raise ValueError(f"dims must be 1 (sequences) or 2 (maps); got {dims}")


PADDING_MODES = ("zeros", "circular")


def _check_padding(padding_mode: str) -> None:
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}; got {padding_mode!r}")


def _groups(channels: int, groups: int) -> int:
    """The largest divisor of ``channels`` that is at most ``groups`` (GroupNorm needs a divisor)."""
    return max(g for g in range(1, min(groups, channels) + 1) if channels % g == 0)


class ResBlock(nn.Module):
    r"""Pre-activation residual block h ↦ skip(h) + Conv₂(SiLU(M_c(Conv₁(SiLU(GN(h)))))).

    ``skip`` is the identity, or a 1×1 convolution when the channel count changes. A context c ``[n, f]`` (a
    time embedding, an embedded parameter) enters between the two convolutions through M_c, in one of two ways:

    - additive (``film=False``, the DDPM block): z ↦ GN(z + V c), one bias per channel;
    - FiLM (``film=True``, the "scale-shift norm" of Dhariwal & Nichol 2021, Perez et al. 2018):
      z ↦ GN(z) ⊙ (1 + γ(c)) + β(c), one scale and one shift per channel, with γ's projection initialised at
      zero so that the scale starts at exactly one.

    Without a context M_c is GN. The last convolution starts at zero, so that a fresh block is the identity
    (well-conditioned deep stacks). ``dims=1`` gives the same block for sequences ``[n, C, T]`` (1-D convolutions).

    Args:
        in_channels: channels in.
        out_channels: channels out (default ``in_channels``).
        context_features: width of an optional context.
        groups: GroupNorm groups (the largest divisor of the channel count up to this).
        dropout: dropout before the second convolution.
        film: FiLM conditioning (scale and shift) instead of an additive bias.
        dims: 2 for maps ``[n, C, H, W]``, 1 for sequences ``[n, C, T]``.
        padding_mode: ``"zeros"`` or ``"circular"`` (periodic maps: the block then commutes with every shift
            on the torus).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        context_features: int | None = None,
        groups: int = 8,
        dropout: float = 0.0,
        film: bool = False,
        dims: int = 2,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        conv = _conv(dims)
        _check_padding(padding_mode)
        out_channels = out_channels or in_channels
        self.film = film
        self.norm1 = nn.GroupNorm(_groups(in_channels, groups), in_channels)
        self.conv1 = conv(in_channels, out_channels, 3, padding=1, padding_mode=padding_mode)
        self.norm2 = nn.GroupNorm(_groups(out_channels, groups), out_channels)
        self.conv2 = conv(out_channels, out_channels, 3, padding=1, padding_mode=padding_mode)
        width = 2 * out_channels if film else out_channels
        self.context = nn.Linear(context_features, width) if context_features else None
        if film and self.context is not None:  # γ (the first half) starts at zero: the scale 1 + γ is one
            nn.init.zeros_(self.context.weight[:out_channels])
            nn.init.zeros_(self.context.bias[:out_channels])
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.act = nn.SiLU()
        self.skip = nn.Identity() if in_channels == out_channels else conv(in_channels, out_channels, 1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, h: Tensor, context: Tensor | None = None) -> Tensor:
        z = self.conv1(self.act(self.norm1(h)))
        if self.context is not None and context is not None:
            projected = self.context(context).reshape(*context.shape[:1], -1, *(1,) * (h.dim() - 2))
            if self.film:
                gamma, beta = projected.chunk(2, dim=1)
                z = self.norm2(z) * (1 + gamma) + beta
            else:
                z = self.norm2(z + projected)
        else:
            z = self.norm2(z)
        z = self.conv2(self.dropout(self.act(z)))
        return self.skip(h) + z


class Downsample(nn.Module):
    """Halve the spatial sizes (rounding up) with a stride-2 size-3 convolution (``dims=1`` for sequences)."""

    def __init__(self, channels: int, dims: int = 2, padding_mode: str = "zeros") -> None:
        super().__init__()
        _check_padding(padding_mode)
        self.conv = _conv(dims)(channels, channels, 3, stride=2, padding=1, padding_mode=padding_mode)

    def forward(self, h: Tensor) -> Tensor:
        return self.conv(h)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour upsampling followed by a 3×3 convolution (no checkerboard artefacts)."""

    def __init__(self, channels: int, padding_mode: str = "zeros") -> None:
        super().__init__()
        _check_padding(padding_mode)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, padding_mode=padding_mode)

    def forward(self, h: Tensor) -> Tensor:
        return self.conv(nn.functional.interpolate(h, scale_factor=2.0, mode="nearest"))


class SelfAttention(nn.Module):
    r"""Multi-head self-attention over the H·W positions of a map, as a residual block:
    h ↦ h + P · softmax(Q Kᵀ / √d) V with Q, K, V 1×1 convolutions of GN(h) (Vaswani et al. 2017; the
    attention block of the DDPM U-Net). The output projection P starts at zero: a fresh block is the identity.

    Args:
        channels: channels of the map.
        heads: attention heads (must divide ``channels``).
        groups: GroupNorm groups.
    """

    def __init__(self, channels: int, heads: int = 1, groups: int = 8) -> None:
        super().__init__()
        if heads < 1 or channels % heads:
            raise ValueError(f"attention heads must divide the channels; got {heads} heads for {channels} channels")
        self.heads = heads
        self.norm = nn.GroupNorm(_groups(channels, groups), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: Tensor) -> Tensor:
        n, c, height, width = h.shape
        q, k, v = self.qkv(self.norm(h)).reshape(n, 3, self.heads, c // self.heads, height * width).unbind(1)
        # [n, heads, positions, head_dim]
        out = nn.functional.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2),
                                                         v.transpose(-1, -2))
        return h + self.proj(out.transpose(-1, -2).reshape(n, c, height, width))


class _Blocks(nn.Module):
    """``num_blocks`` residual blocks that all see the context."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, context_features: int | None,
                 groups: int, film: bool = False, dims: int = 2) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            ResBlock(in_channels if i == 0 else out_channels, out_channels, context_features, groups, film=film,
                     dims=dims)
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


class UNet(nn.Module):
    r"""Conditional U-Net ``x [n, C, H, W], cond [n, f] -> [n, C, H, W]`` (Ronneberger et al. 2015; the
    DDPM/ADM variant: Ho et al. 2020, Dhariwal & Nichol 2021).

    A 3×3 stem, then L = ``len(channels)`` levels going down: ``blocks_per_level`` residual blocks of
    ``channels[i]`` channels, each output kept as a skip connection, and a stride-2 downsampling between levels
    (L − 1 in all). At the lowest resolution a residual block, multi-head self-attention (``attention=True``) and
    a residual block. Going up, each level has ``blocks_per_level + 1`` residual blocks, each fed the concatenation
    of the current map and one skip, and a nearest-neighbour upsampling between levels. A group-normalised,
    zero-initialised 3×3 convolution gives the ``C`` output channels, so a fresh network outputs zero.

    The conditioning vector (a time embedding, possibly joined with an embedded context) modulates every residual
    block by FiLM: GN(z) ⊙ (1 + γ(cond)) + β(cond) per channel (see :class:`ResBlock`).

    Any H, W: maps whose sides are not multiples of 2^(L−1) are zero-padded (evenly on both sides) to the next
    multiple and the output is cropped back, so the network is defined on every size. A single-channel network
    (``in_channels=1``) also takes ``[n, H, W]`` and then returns ``[n, H, W]``.

    **Padding.** ``padding_mode="circular"`` (the default) pads every convolution periodically, the right
    boundary for fields on a torus (FFT-generated maps): on maps whose sides are multiples of 2^(L−1) the network
    then commutes with every shift by a multiple of 2^(L−1) pixels (each stride-2 convolution halves a shift,
    each upsampling doubles it; attention and group normalisation are permutation-equivariant).
    ``"zeros"`` is the former behaviour. The mode is also kept in a buffer, so that a state dict saved before
    the option existed (it lacks the buffer) loads into a zero-padded network, as it was trained.

    Args:
        in_channels: channels C of the maps (in and out).
        cond_features: width f of the conditioning vector (0: unconditional, ``cond=None``).
        channels: channels of each level, finest first.
        blocks_per_level: residual blocks per level going down.
        attention: self-attention at the lowest resolution.
        groups: GroupNorm groups (the largest divisor of each channel count up to this).
        padding_mode: ``"circular"`` (periodic maps) or ``"zeros"``.
    """

    name = "unet"

    def __init__(
        self,
        in_channels: int,
        cond_features: int,
        channels: Sequence[int] = (32, 64),
        blocks_per_level: int = 2,
        attention: bool = True,
        groups: int = 8,
        padding_mode: str = "circular",
    ) -> None:
        super().__init__()
        _check_levels(channels, blocks_per_level)
        _check_padding(padding_mode)
        if in_channels < 1 or cond_features < 0:
            raise ValueError(f"UNet needs in_channels >= 1 and cond_features >= 0; got {in_channels}, "
                             f"{cond_features}")
        channels = [int(ch) for ch in channels]
        self.in_channels, self.cond_features = int(in_channels), int(cond_features)
        self.multiple = 2 ** (len(channels) - 1)
        cond = self.cond_features or None

        def block(c_in: int, c_out: int) -> ResBlock:
            return ResBlock(c_in, c_out, cond, groups, film=True, padding_mode=padding_mode)

        self.stem = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        skips, width = [channels[0]], channels[0]
        self.down = nn.ModuleList()
        for i, ch in enumerate(channels):
            for _ in range(blocks_per_level):
                self.down.append(block(width, ch))
                width = ch
                skips.append(width)
            if i < len(channels) - 1:
                self.down.append(Downsample(width))
                skips.append(width)
        self.mid = nn.ModuleList([block(width, width), block(width, width)])
        self.attention = SelfAttention(width, _heads(width), groups) if attention else None
        self.up = nn.ModuleList()
        for i, ch in reversed(list(enumerate(channels))):
            for _ in range(blocks_per_level + 1):
                self.up.append(block(width + skips.pop(), ch))
                width = ch
            if i > 0:
                self.up.append(Upsample(width))
        self.out_norm = nn.GroupNorm(_groups(width, groups), width)
        self.act = nn.SiLU()
        self.output = nn.Conv2d(width, in_channels, 3, padding=1)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)
        self._config = dict(in_channels=self.in_channels, cond_features=self.cond_features, channels=channels,
                            blocks_per_level=blocks_per_level, attention=attention, groups=groups)
        self.register_buffer("circular_padding", torch.tensor(False))
        self.set_padding_mode(padding_mode)
        self._register_load_state_dict_pre_hook(self._padding_from_state)

    @property
    def padding_mode(self) -> str:
        return "circular" if bool(self.circular_padding) else "zeros"

    def set_padding_mode(self, padding_mode: str) -> None:
        """Switch every 3×3 convolution to ``padding_mode`` (the weights are the same in both modes)."""
        _check_padding(padding_mode)
        for module in self.modules():
            if isinstance(module, nn.Conv2d) and module.kernel_size != (1, 1):
                module.padding_mode = padding_mode
        self.circular_padding.fill_(padding_mode == "circular")

    def _padding_from_state(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        """A state dict decides the padding it was trained with; one without the buffer predates circular
        padding: zeros."""
        key = prefix + "circular_padding"
        if key not in state_dict:
            state_dict[key] = torch.tensor(False)
        self.set_padding_mode("circular" if bool(state_dict[key]) else "zeros")

    def config(self) -> dict[str, Any]:
        return dict(self._config, padding_mode=self.padding_mode)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        squeeze = x.dim() == 3 and self.in_channels == 1
        if squeeze:
            x = x.unsqueeze(1)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            expected = "[n, H, W] or [n, 1, H, W]" if self.in_channels == 1 else f"[n, {self.in_channels}, H, W]"
            raise ValueError(f"UNet expects maps {expected}; got {list(x.shape)}")
        cond = self._check_cond(cond, x.shape[0])
        height, width = x.shape[-2:]
        pad_h, pad_w = (-height) % self.multiple, (-width) % self.multiple
        if pad_h or pad_w:
            x = nn.functional.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        h = self.stem(x)
        skips = [h]
        for layer in self.down:
            h = layer(h, cond) if isinstance(layer, ResBlock) else layer(h)
            skips.append(h)
        h = self.mid[0](h, cond)
        if self.attention is not None:
            h = self.attention(h)
        h = self.mid[1](h, cond)
        for layer in self.up:
            h = layer(torch.cat([h, skips.pop()], dim=1), cond) if isinstance(layer, ResBlock) else layer(h)
        h = self.output(self.act(self.out_norm(h)))
        h = h[..., pad_h // 2: pad_h // 2 + height, pad_w // 2: pad_w // 2 + width]
        return h.squeeze(1) if squeeze else h

    def _check_cond(self, cond: Tensor | None, n: int) -> Tensor | None:
        if not self.cond_features:
            if cond is not None:
                raise ValueError("this UNet was built with cond_features=0: pass cond=None")
            return None
        if cond is None or cond.dim() != 2 or cond.shape != (n, self.cond_features):
            got = None if cond is None else list(cond.shape)
            raise ValueError(f"UNet expects cond [n, {self.cond_features}] with n = {n} rows of x; got {got}")
        return cond


def _heads(channels: int) -> int:
    """One attention head per 32 channels (at least one, and dividing ``channels``)."""
    heads = max(1, channels // 32)
    while channels % heads:
        heads -= 1
    return heads


class _ConvEmbedding(nn.Module):
    """What the map and sequence embeddings share: a stem, per level residual blocks and a stride-2
    downsampling, then GN–SiLU, an average over the positions and an MLP read-out. ``dims`` is 2 for maps
    (``[n, C, H, W]``) and 1 for sequences (``[n, d, T]``)."""

    name = ""

    def __init__(self, in_shape: tuple[int, ...], in_channels: int, out_features: int, channels: Sequence[int],
                 blocks_per_level: int, groups: int, dims: int, stem_kernel: int) -> None:
        super().__init__()
        _check_levels(channels, blocks_per_level)
        self.in_shape = in_shape
        self.dims = dims
        self.out_features = int(out_features)
        conv = nn.Conv2d if dims == 2 else nn.Conv1d
        self.stem = conv(in_channels, channels[0], stem_kernel, padding=stem_kernel // 2)
        layers: list[nn.Module] = []
        width = channels[0]
        for ch in channels:
            layers += [_Blocks(width, ch, blocks_per_level, None, groups, dims=dims), Downsample(ch, dims=dims)]
            width = ch
        self.body = nn.ModuleList(layers)
        self.out_norm = nn.GroupNorm(_groups(width, groups), width)
        self.act = nn.SiLU()
        self.readout = nn.Sequential(nn.Linear(width, 2 * width), nn.SiLU(), nn.Linear(2 * width, self.out_features))
        self._config = dict(in_shape=list(self.in_shape), out_features=self.out_features, channels=list(channels),
                            blocks_per_level=blocks_per_level, groups=groups)

    def config(self) -> dict[str, Any]:
        return dict(self._config)

    def _check(self, x: Tensor, what: str) -> None:
        if tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(f"{type(self).__name__} expects {what} [n, {', '.join(map(str, self.in_shape))}]; "
                             f"got {list(x.shape)}")

    def _embed(self, h: Tensor) -> Tensor:
        """Stem, levels and read-out of ``h`` ``[n, channels, *positions]``."""
        h = self.stem(h)
        for layer in self.body:
            h = layer(h, None) if isinstance(layer, _Blocks) else layer(h)
        positions = tuple(range(2, 2 + self.dims))
        return self.readout(self.act(self.out_norm(h)).mean(dim=positions))


class MapEmbedding(_ConvEmbedding):
    r"""CNN embedding of maps used as a context: ``[n, H, W]`` or ``[n, C, H, W]`` → ``[n, out_features]``.

    A 3×3 stem, then per level residual blocks and a stride-2 downsampling, then GN–SiLU, a global average over
    the positions and an MLP read-out:

    .. math::  e(x) = W_2\, \mathrm{SiLU}\big(W_1\, \tfrac{1}{|P|} \sum_{p \in P} h_p(x)\big).

    Averaging over positions makes the summary insensitive to translations (fields that are statistically
    stationary, as cosmological maps are) and keeps the parameter count independent of the map size. The
    default widths start narrow at full resolution (8 channels), where the convolutions cost most, so that
    64×64 maps train on a CPU (timings in the README, "Tests and benchmarks").

    Args:
        in_shape: ``(H, W)`` or ``(C, H, W)`` of one map.
        out_features: output width.
        channels: channels of each level (one downsampling per level).
        blocks_per_level: residual blocks per level.
        groups: GroupNorm groups.
    """

    name = "map_embedding"

    def __init__(
        self,
        in_shape: Sequence[int],
        out_features: int = 32,
        channels: Sequence[int] = (8, 16, 32, 64),
        blocks_per_level: int = 1,
        groups: int = 8,
    ) -> None:
        in_shape = tuple(int(s) for s in in_shape)
        super().__init__(in_shape, map_channels(in_shape)[0], out_features, channels, blocks_per_level, groups,
                         dims=2, stem_kernel=3)

    def forward(self, x: Tensor) -> Tensor:
        self._check(x, "maps")
        return self._embed(x.reshape(x.shape[0], *map_channels(self.in_shape)))


class SequenceEmbedding(_ConvEmbedding):
    r"""1-D CNN embedding of sequences (``x_kind="sequence"``): ``[n, T, d]`` (or ``[n, T]``) → ``[n, out_features]``.

    The d features of each step are the channels of a 1-D convolutional network along time: a size-5 stem, then
    per level residual blocks (:class:`ResBlock` with ``dims=1``) and a stride-2 downsampling, then GN–SiLU, an
    average over time and an MLP read-out. A stack of L levels sees windows of about 2^L · 5 steps; the average
    makes the summary a sum of local statistics of the path, which is what the likelihood of a Markov
    trajectory, Σ_k log p(z_{k+1} | z_k), is.

    Args:
        in_shape: ``(T, d)`` or ``(T,)`` of one sequence.
        out_features: output width.
        channels: channels of each level (one downsampling per level).
        blocks_per_level: residual blocks per level.
        groups: GroupNorm groups.
    """

    name = "sequence_embedding"

    def __init__(
        self,
        in_shape: Sequence[int],
        out_features: int = 32,
        channels: Sequence[int] = (32, 64),
        blocks_per_level: int = 1,
        groups: int = 8,
    ) -> None:
        in_shape = tuple(int(s) for s in in_shape)
        if len(in_shape) not in (1, 2) or min(in_shape) < 1:
            raise ValueError(f"a sequence row must have shape (T,) or (T, d); got {in_shape}")
        d = in_shape[1] if len(in_shape) == 2 else 1
        super().__init__(in_shape, d, out_features, channels, blocks_per_level, groups, dims=1, stem_kernel=5)

    def forward(self, x: Tensor) -> Tensor:
        self._check(x, "sequences")
        return self._embed(x.reshape(x.shape[0], self.in_shape[0], -1).transpose(1, 2))  # [n, d, T]
