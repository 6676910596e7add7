r"""A transformer over one token per scalar variable: the network of the all-in-one (Simformer) family.

Each of the T variables of a joint vector z = (θ, x) is one token. Token k of row i is the sum of four
embeddings (Gloeckler et al. 2024, "All-in-one simulation-based inference", arXiv:2404.09636, Sec. 3.2):

    h⁰_{ik} = W_v z_{ik}  +  e_k  +  s_{m_{ik}}  +  W_t τ(t_i)

a *value* embedding W_v ∈ R^{F×1} shared by all tokens, a learned *identity* e_k ∈ R^F of variable k, a learned
*condition state* s_0 (latent: to be generated) or s_1 (observed: conditioned on), and the time embedding
τ(t) (:class:`~simgen.nets.TimeEmbedding`) of the flow's time. Pre-norm transformer encoder layers (Vaswani et al.
2017; Xiong et al. 2020 for the pre-norm placement) mix the tokens, optionally only along a known dependency
structure (an attention mask), and a linear head reads one scalar per token.

Nothing but e_k tells the tokens apart: permuting the tokens together with their identity embeddings permutes
the output in the same way (the layers are permutation-equivariant), which is what lets one network serve every
conditional and accept any dependency graph.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .time import TimeEmbedding

__all__ = ["TokenTransformer"]


class TokenTransformer(nn.Module):
    r"""F(z, t, m) ∈ R^T: one output per token of z ``[n, T]`` at times t ``[n]`` under condition masks m ``[n, T]``
    (``True``: observed), see the module docstring.

    Args:
        tokens: T, the number of scalar variables.
        features: F, the token width.
        num_layers: transformer encoder layers.
        num_heads: attention heads (must divide ``features``).
        time_features: width of the time embedding before its projection to F.
        attention_mask: ``[T, T]`` booleans, entry (k, l) ``True`` when token k may attend to token l (a known
            dependency structure: k's conditional depends on l); the diagonal is always allowed. ``None``: dense.
        feedforward_factor: width of each layer's MLP in units of F.

    The head starts at zero, so a fresh network outputs 0 for every token (a family adds it to the prediction
    that is exact for standard-normal data).
    """

    name = "token_transformer"

    def __init__(
        self,
        tokens: int,
        features: int = 64,
        num_layers: int = 4,
        num_heads: int = 4,
        time_features: int = 32,
        attention_mask: Tensor | list[list[bool]] | None = None,
        feedforward_factor: int = 2,
    ) -> None:
        super().__init__()
        if min(tokens, features, num_layers, num_heads, time_features, feedforward_factor) < 1:
            raise ValueError("tokens, features, num_layers, num_heads, time_features and feedforward_factor must be "
                             f">= 1; got {tokens}, {features}, {num_layers}, {num_heads}, {time_features}, "
                             f"{feedforward_factor}")
        if features % num_heads:
            raise ValueError(f"num_heads must divide features; got {num_heads} heads for {features} features")
        self.tokens, self.features, self.num_layers, self.num_heads = tokens, features, num_layers, num_heads
        self.time_features, self.feedforward_factor = time_features, feedforward_factor
        allowed = check_attention_mask(attention_mask, tokens)
        # torch's boolean attention masks say which pairs may NOT attend
        self.register_buffer("blocked", None if allowed is None else ~allowed)
        self.value = nn.Linear(1, features)
        self.identity = nn.Parameter(0.5 * torch.randn(tokens, features))
        self.state = nn.Embedding(2, features)
        self.time = TimeEmbedding(time_features)
        self.time_projection = nn.Linear(time_features, features)
        layer = nn.TransformerEncoderLayer(features, num_heads, dim_feedforward=feedforward_factor * features,
                                           dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(features)
        self.head = nn.Linear(features, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def config(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "features": self.features, "num_layers": self.num_layers,
                "num_heads": self.num_heads, "time_features": self.time_features,
                "attention_mask": None if self.blocked is None else (~self.blocked).tolist(),
                "feedforward_factor": self.feedforward_factor}

    def forward(self, z: Tensor, t: Tensor, observed: Tensor) -> Tensor:
        """``[n, T]`` outputs for values z ``[n, T]``, times t ``[n]`` and condition masks ``observed`` ``[n, T]``
        (bool, or ``[T]`` shared by the rows)."""
        n = z.shape[0]
        if z.dim() != 2 or z.shape[1] != self.tokens:
            raise ValueError(f"z must have shape [n, {self.tokens}]; got {list(z.shape)}")
        observed = observed.expand(n, self.tokens)
        h = (self.value(z[..., None]) + self.identity + self.state(observed.long())
             + self.time_projection(self.time(t.to(z.dtype)))[:, None, :])
        h = self.encoder(h, mask=self.blocked)
        return self.head(self.norm(h))[..., 0]


def check_attention_mask(mask: Tensor | list[list[bool]] | None, tokens: int) -> Tensor | None:
    """An attention mask as a ``[T, T]`` boolean tensor with its diagonal set (``None`` stays ``None``); a clear
    error for another shape or type."""
    if mask is None:
        return None
    mask = torch.as_tensor(mask)
    if mask.dtype != torch.bool:
        raise ValueError(f"attention_mask must hold booleans; got dtype {mask.dtype}")
    if tuple(mask.shape) != (tokens, tokens):
        raise ValueError(f"attention_mask must have shape [{tokens}, {tokens}] (one row and column per variable); "
                         f"got {list(mask.shape)}")
    return mask | torch.eye(tokens, dtype=torch.bool)
