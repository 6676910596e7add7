"""Fully connected networks shared by every family: an MLP and a residual MLP, plus a flattening embedding."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["MLP", "ResidualMLP", "Flatten", "Conditioner"]


class MLP(nn.Sequential):
    """Multi-layer perceptron ``[n, in_features] -> [n, out_features]``.

    Args:
        in_features: input width.
        out_features: output width.
        hidden_features: width of each hidden layer.
        num_layers: number of hidden layers.
        activation: hidden activation (``"relu"``, ``"gelu"``, ``"silu"``, ``"elu"``, ``"tanh"``).
        dropout: dropout probability after each hidden activation.
    """

    name = "mlp"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_features: int = 64,
        num_layers: int = 2,
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden_features), _activation(activation)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden_features
        layers.append(nn.Linear(width, out_features))
        super().__init__(*layers)
        self.in_features, self.out_features = in_features, out_features
        self._config = dict(
            in_features=in_features,
            out_features=out_features,
            hidden_features=hidden_features,
            num_layers=num_layers,
            activation=activation,
            dropout=dropout,
        )

    def config(self) -> dict[str, Any]:
        return dict(self._config)


class _ResidualBlock(nn.Module):
    def __init__(self, features: int, context_features: int | None, activation: str, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(features)
        self.linear1 = nn.Linear(features, features)
        self.linear2 = nn.Linear(features, features)
        self.context = None if not context_features else nn.Linear(context_features, features)
        self.act = _activation(activation)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # Start every block as the identity so that deep stacks train from a well-conditioned point.
        nn.init.zeros_(self.linear2.weight)
        nn.init.zeros_(self.linear2.bias)

    def forward(self, h: Tensor, context: Tensor | None = None) -> Tensor:
        z = self.linear1(self.act(self.norm(h)))
        if self.context is not None and context is not None:
            z = z + self.context(context)
        return h + self.linear2(self.dropout(self.act(z)))


class ResidualMLP(nn.Module):
    r"""Residual MLP: h₀ = W_in x, h_{k+1} = h_k + W₂ σ(W₁ σ(LN(h_k)) + V c), out = W_out σ(h_K).

    An optional context ``[n, context_features]`` is added inside every block.

    Args:
        in_features: width of the input.
        out_features: width of the output.
        hidden_features: width of the residual stream.
        num_blocks: number of residual blocks.
        context_features: width of an optional context injected into each block.
        activation: hidden activation.
        dropout: dropout inside the blocks.
    """

    name = "residual_mlp"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_features: int = 128,
        num_blocks: int = 2,
        context_features: int | None = None,
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.input = nn.Linear(in_features + (context_features or 0), hidden_features)
        self.blocks = nn.ModuleList(
            _ResidualBlock(hidden_features, context_features, activation, dropout) for _ in range(num_blocks)
        )
        self.act = _activation(activation)
        self.output = nn.Linear(hidden_features, out_features)
        self._config = dict(
            in_features=in_features,
            out_features=out_features,
            hidden_features=hidden_features,
            num_blocks=num_blocks,
            context_features=context_features,
            activation=activation,
            dropout=dropout,
        )

    def config(self) -> dict[str, Any]:
        return dict(self._config)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        h = self.input(x if context is None else torch.cat([x, context], dim=-1))
        for block in self.blocks:
            h = block(h, context)
        return self.output(self.act(h))


class Flatten(nn.Module):
    """Identity embedding that flattens each row: ``[n, *shape] -> [n, prod(shape)]``."""

    name = "flatten"

    def __init__(self, shape: tuple[int, ...] | list[int]) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        self.out_features = math.prod(self.shape)

    def config(self) -> dict[str, Any]:
        return {"shape": list(self.shape)}

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1)


_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "elu": nn.ELU, "tanh": nn.Tanh}


class Conditioner(nn.Module):
    """The parameters of a transform as a function of the context: a small MLP c ``[n, f]`` → ``[n, out]``
    (two SiLU hidden layers of width ``hidden``) whose last layer starts at zero, so that a fresh transform has
    the parameters 0 for every context; a learned constant ``[n, out]`` when the model is unconditional
    (``features`` is ``None``)."""

    def __init__(self, features: int | None, out: int, hidden: int) -> None:
        super().__init__()
        self.final = nn.Linear(hidden if features else 1, out)
        nn.init.zeros_(self.final.weight)
        nn.init.zeros_(self.final.bias)
        self.body = (nn.Sequential(nn.Linear(features, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
                     if features else None)

    def bias_view(self, *shape: int) -> Tensor:
        """The last layer's bias, viewed as ``shape``: the parameters of every context while the weights are 0."""
        return self.final.bias.view(*shape)

    def forward(self, c: Tensor | None, n: int) -> Tensor:
        """``[n, out]`` for the context rows ``c`` ``[n, f]`` (``None`` when unconditional)."""
        if self.body is None:
            return self.final.bias.expand(n, -1)
        return self.final(self.body(c))


def _activation(name: str) -> nn.Module:
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(_ACTIVATIONS)}") from None
