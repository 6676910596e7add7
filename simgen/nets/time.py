"""Networks of a continuous time t ∈ [0, 1]: a sinusoidal time embedding and a FiLM-conditioned residual MLP.

The continuous-time families (:class:`~simgen.models.CNF`, :class:`~simgen.models.Diffusion`) regress a vector
field F(y, t, c) — a velocity or a noise prediction — on a state y, a time t and an optional (embedded) context
c. :class:`TimeEmbedding` turns t into features; :class:`FiLMResidualMLP` is the vector backbone, in which the
condition (time features, context) scales and shifts every residual block (FiLM: Perez et al. 2018,
"FiLM: Visual Reasoning with a General Conditioning Layer", arXiv:1709.07871). Maps use the conditional U-Net of
:mod:`simgen.nets.conv` with the same time embedding.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["TimeEmbedding", "FiLMResidualMLP"]


class TimeEmbedding(nn.Module):
    r"""Sinusoidal embedding of a time t ∈ [0, 1], followed by a two-layer MLP: ``[n] -> [n, features]``.

    With k = 0, …, K−1 (K = ``frequencies``) and angular frequencies ω_k = ω_max^{k/(K−1)} (geometric from 1 to
    ω_max = ``max_frequency``),

        φ(t) = [sin(ω_0 t), …, sin(ω_{K−1} t), cos(ω_0 t), …, cos(ω_{K−1} t)] ∈ R^{2K},

    the transformer's positional encoding (Vaswani et al. 2017) applied to a continuous time, as in DDPM
    (Ho et al. 2020). The slowest frequency resolves [0, 1] as a whole, the fastest the small times where
    diffusions change quickly. An MLP φ ↦ W₂ SiLU(W₁ φ) gives the learned ``features``.

    Args:
        features: output width.
        frequencies: K, the number of sinusoid pairs.
        max_frequency: ω_max.
    """

    name = "time_embedding"

    def __init__(self, features: int = 64, frequencies: int = 16, max_frequency: float = 1000.0) -> None:
        super().__init__()
        if features < 1 or frequencies < 2 or max_frequency <= 1:
            raise ValueError(f"TimeEmbedding needs features >= 1, frequencies >= 2 and max_frequency > 1; got "
                             f"{features}, {frequencies}, {max_frequency}")
        self.features, self.frequencies, self.max_frequency = features, frequencies, float(max_frequency)
        self.out_features = features
        omega = torch.exp(torch.linspace(0.0, math.log(max_frequency), frequencies))
        self.register_buffer("omega", omega, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * frequencies, features), nn.SiLU(), nn.Linear(features, features))

    def config(self) -> dict[str, Any]:
        return {"features": self.features, "frequencies": self.frequencies, "max_frequency": self.max_frequency}

    def forward(self, t: Tensor) -> Tensor:
        if t.dim() != 1:
            raise ValueError(f"TimeEmbedding takes times of shape [n]; got {list(t.shape)}")
        angles = t[:, None].to(self.omega.dtype) * self.omega
        return self.mlp(torch.cat([angles.sin(), angles.cos()], dim=-1))


class _FiLMBlock(nn.Module):
    """h ↦ h + W₂ SiLU(LN'(W₁ SiLU(LN(h))) ⊙ (1 + γ(e)) + β(e)), with W₂ and γ starting at zero."""

    def __init__(self, features: int, cond_features: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(features)
        self.linear1 = nn.Linear(features, features)
        self.norm2 = nn.LayerNorm(features, elementwise_affine=False)
        self.film = nn.Linear(cond_features, 2 * features)
        self.linear2 = nn.Linear(features, features)
        self.act = nn.SiLU()
        nn.init.zeros_(self.film.weight[:features])  # γ = 0: the scale 1 + γ starts at one
        nn.init.zeros_(self.film.bias[:features])
        nn.init.zeros_(self.linear2.weight)  # the block starts as the identity
        nn.init.zeros_(self.linear2.bias)

    def forward(self, h: Tensor, cond: Tensor) -> Tensor:
        gamma, beta = self.film(cond).chunk(2, dim=-1)
        z = self.norm2(self.linear1(self.act(self.norm(h))))
        return h + self.linear2(self.act(z * (1 + gamma) + beta))


class FiLMResidualMLP(nn.Module):
    r"""Residual MLP of a state, a time and a context: F(y, t, c), ``[n, d], [n], [n, f] | None -> [n, d]``.

    The condition e = SiLU([τ(t), c]) (τ a :class:`TimeEmbedding`; c omitted for unconditional models) drives
    every block by FiLM:

        h₀ = W_y y + W_e e,
        h_{k+1} = h_k + W₂ SiLU(LN(W₁ SiLU(LN(h_k))) ⊙ (1 + γ_k(e)) + β_k(e)),
        F = W_out SiLU(LN(h_K)).

    Every block starts as the identity and, with ``zero_output=True``, W_out starts at zero, so that a fresh
    network outputs exactly 0 (the families add their Gaussian-optimal prediction to F; see
    :class:`~simgen.models.CNF`).

    Args:
        features: d, the width of the state and of the output.
        context_features: f, the width of the context (``None``: unconditional).
        hidden_features: width of the residual stream.
        num_blocks: number of FiLM residual blocks.
        time_features: width of the time embedding.
        zero_output: start the output layer at zero.
    """

    name = "film_residual_mlp"

    def __init__(
        self,
        features: int,
        context_features: int | None = None,
        hidden_features: int = 128,
        num_blocks: int = 3,
        time_features: int = 64,
        zero_output: bool = True,
    ) -> None:
        super().__init__()
        if min(features, hidden_features, num_blocks, time_features) < 1:
            raise ValueError(f"features, hidden_features, num_blocks and time_features must be >= 1; got "
                             f"{features}, {hidden_features}, {num_blocks}, {time_features}")
        if context_features is not None and context_features < 1:
            raise ValueError(f"context_features must be >= 1 or None; got {context_features}")
        self.features, self.context_features = features, context_features
        self.in_features = self.out_features = features
        self.time = TimeEmbedding(time_features)
        cond = time_features + (context_features or 0)
        self.input = nn.Linear(features, hidden_features)
        self.cond_input = nn.Linear(cond, hidden_features)
        self.blocks = nn.ModuleList(_FiLMBlock(hidden_features, cond) for _ in range(num_blocks))
        self.norm = nn.LayerNorm(hidden_features)
        self.output = nn.Linear(hidden_features, features)
        self.act = nn.SiLU()
        if zero_output:
            nn.init.zeros_(self.output.weight)
            nn.init.zeros_(self.output.bias)
        self._config = dict(features=features, context_features=context_features, hidden_features=hidden_features,
                            num_blocks=num_blocks, time_features=time_features, zero_output=zero_output)

    def config(self) -> dict[str, Any]:
        return dict(self._config)

    def forward(self, y: Tensor, t: Tensor, c: Tensor | None = None) -> Tensor:
        n = y.shape[0]
        if y.dim() != 2 or y.shape[1] != self.features:
            raise ValueError(f"y must have shape [n, {self.features}]; got {list(y.shape)}")
        if t.shape != (n,):
            raise ValueError(f"t must have shape [{n}]; got {list(t.shape)}")
        if (c is None) != (self.context_features is None):
            raise ValueError("c must be given exactly when the network was built with context_features "
                             f"(context_features={self.context_features}; c is {'None' if c is None else 'given'})")
        if c is not None and c.shape != (n, self.context_features):
            raise ValueError(f"c must have shape [{n}, {self.context_features}]; got {list(c.shape)}")
        e = self.time(t)
        if c is not None:
            e = torch.cat([e, c], dim=-1)
        e = self.act(e)
        h = self.input(y) + self.cond_input(e)
        for block in self.blocks:
            h = block(h, e)
        return self.output(self.act(self.norm(h)))
