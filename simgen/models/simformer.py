r"""The all-in-one family (Simformer): one transformer over the joint (y, c), trained on random conditionals.

Gloeckler et al. 2024, "All-in-one simulation-based inference" (ICML, arXiv:2404.09636): every scalar of the
joint vector z = (y, c) ∈ R^T, T = D_y + D_c, is a token (:class:`~simgen.nets.TokenTransformer`), and a
*condition mask* m ∈ {0, 1}^T says which tokens are observed (m_k = 1) and which are generated. Trained on masks
drawn at random, one network represents every conditional p(z_latent | z_observed) of the joint: the posterior
(c observed), the likelihood (y observed), the joint (nothing observed) and any subset.

**Training: flow matching** on the linear path of :class:`~simgen.models.cnf.ContinuousFlow`, applied to the
latent tokens only. For a row z₀, a mask m, τ ~ U[0, 1] and ε ~ N(0, I),

    z_τ = m ⊙ z₀ + (1 − m) ⊙ ((1 − τ) z₀ + τ ε),
    L(φ) = E ‖(1 − m) ⊙ (v_φ(z_τ, τ, m) − (ε − z₀))‖² / E ‖1 − m‖₁,

whose minimiser on the latent tokens is E[ε − z₀ | z_τ, m], the velocity that transports p(z_latent | z_observed)
to N(0, I) (the conditional flow-matching argument of Lipman et al. 2023, arXiv:2210.02747, with the observed
tokens part of the condition). The observed tokens' velocity is 0 by construction, so an ODE solve never changes
them. Flow matching rather than the paper's denoising score matching: the linear path is the one the CNF and the
diffusion family already share, so sampling and the exact-trace ``log_prob`` go through the same ODE toolbox
(:mod:`simgen.models.ode`) with no second integrator, and the velocity target has unit scale at every τ (no
noise-level weighting to tune).

**Masks.** Each row draws one of four kinds with probabilities ``mask_weights`` (the paper's mix): ``"joint"``
(nothing observed), ``"target"`` (c observed: the family's own p(y | c)), ``"reverse"`` (y observed: p(c | y))
and ``"random"`` (each token observed with probability ½, at least one latent). Without a context only y's
tokens exist, and ``"target"``/``"reverse"`` fall back to ``"joint"``. A learned context embedding (maps, sets)
gets no gradient from rows whose c tokens are generated: else it could make its features easy to predict by
collapsing them. In eval mode (the trainer's validation) the loss is the target conditional's alone, with
fixed draws, so that early stopping follows the density that ``log_prob`` and ``sample`` use.

As a :class:`~simgen.models.ConditionalDensity`, p(y | c) is the target conditional; its ``sample`` and
``log_prob`` are those of :class:`~simgen.models.cnf.ContinuousFlow` with v(y, τ, c) the latent part of
v_φ((y, c), τ, m_target). :meth:`Simformer.conditional` gives any other conditional as a ContinuousFlow of its
own (what :class:`~simgen.JointEstimator` samples and evaluates).

A known dependency structure (``attention_mask``, ``[T, T]``, over the tokens (y, c) in that order) restricts
attention to it (the paper's Sec. 3.3, here a fixed mask for every conditional).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..nets.transformer import TokenTransformer, check_attention_mask
from ..utils import multinomial, rand, randint, randn
from .cnf import ContinuousFlow, stratified_uniform, validation_copies, validation_generator
from .ode import Method

__all__ = ["Simformer", "SimformerConditional", "MASK_KINDS"]

#: the kinds of condition mask training draws from, in the order of ``mask_weights``
MASK_KINDS = ("joint", "target", "reverse", "random")


def gaussian_velocity(z: Tensor, tau: Tensor) -> Tensor:
    """The linear path's velocity for standard-normal data, (2τ − 1) z / ((1 − τ)² + τ²): the prediction a fresh
    network adds to (z ``[n, T]``, τ ``[n]``)."""
    t = tau.to(z.dtype)[:, None]
    return (2 * t - 1) / ((1 - t) ** 2 + t**2) * z


class Simformer(ContinuousFlow):
    r"""All-in-one transformer trained by flow matching on random conditionals (see the module docstring).

    Args:
        hidden_features: token width F of the transformer.
        num_blocks: transformer layers.
        num_heads: attention heads (must divide ``hidden_features``).
        time_features: width of the time embedding.
        mask_weights: probabilities of the mask kinds :data:`MASK_KINDS` (joint, target, reverse, random);
            normalised, at least one positive.
        attention_mask: optional ``[T, T]`` booleans over the tokens (y, c) (see
            :class:`~simgen.nets.TokenTransformer`); checked against T when the family is built.
        method: as in :class:`~simgen.models.cnf.ContinuousFlow`.
        steps: as in :class:`~simgen.models.cnf.ContinuousFlow`.
        log_prob_method: as in :class:`~simgen.models.cnf.ContinuousFlow`.
        log_prob_steps: as in :class:`~simgen.models.cnf.ContinuousFlow`.
        rtol: as in :class:`~simgen.models.cnf.ContinuousFlow`.
        atol: as in :class:`~simgen.models.cnf.ContinuousFlow`.
        exact_trace_max_dim: as in :class:`~simgen.models.cnf.ContinuousFlow`.
        hutchinson_probes: as in :class:`~simgen.models.cnf.ContinuousFlow`.
    """

    family = "simformer"
    data_kinds: ClassVar[frozenset[str]] = frozenset({"vector"})
    #: a transformer wants many small steps: batches of 64 rows at 1e-3, and more patience than an MLP's
    #: (README: the all-in-one section measures these against the trainer's automatic batch size)
    training_defaults: ClassVar[dict[str, Any]] = {"learning_rate": 1e-3, "max_batch_size": 64, "patience": 20}

    def __init__(
        self,
        hidden_features: int = 64,
        num_blocks: int = 4,
        num_heads: int = 4,
        time_features: int = 32,
        mask_weights: Sequence[float] = (0.25, 0.25, 0.25, 0.25),
        attention_mask: list[list[bool]] | Tensor | None = None,
        method: Method = "heun",
        steps: int = 25,
        log_prob_method: Method = "dopri5",
        log_prob_steps: int = 100,
        rtol: float = 1e-5,
        atol: float = 1e-5,
        exact_trace_max_dim: int = 16,
        hutchinson_probes: int = 1,
    ) -> None:
        super().__init__(hidden_features=hidden_features, num_blocks=num_blocks, time_features=time_features,
                         method=method, steps=steps, log_prob_method=log_prob_method, log_prob_steps=log_prob_steps,
                         rtol=rtol, atol=atol, exact_trace_max_dim=exact_trace_max_dim,
                         hutchinson_probes=hutchinson_probes)
        if not isinstance(num_heads, int) or num_heads < 1 or hidden_features % num_heads:
            raise ValueError(f"num_heads must be a positive int dividing hidden_features ({hidden_features}); got "
                             f"{num_heads!r}")
        weights = [float(w) for w in mask_weights]
        if len(weights) != len(MASK_KINDS) or min(weights) < 0 or not math.isfinite(sum(weights)) \
                or sum(weights) <= 0:
            raise ValueError(f"mask_weights must be {len(MASK_KINDS)} non-negative numbers (for {MASK_KINDS}) with a "
                             f"positive sum; got {list(mask_weights)}")
        self.num_heads = num_heads
        self.mask_weights = tuple(w / sum(weights) for w in weights)
        if attention_mask is not None:
            attention_mask = torch.as_tensor(attention_mask)
            if attention_mask.dtype != torch.bool or attention_mask.dim() != 2:
                raise ValueError(f"attention_mask must be a [T, T] boolean matrix; got dtype {attention_mask.dtype}, "
                                 f"shape {list(attention_mask.shape)}")
            attention_mask = attention_mask.tolist()
        self.attention_mask = attention_mask

    def config(self) -> dict[str, Any]:
        return dict(hidden_features=self.hidden_features, num_blocks=self.num_blocks, num_heads=self.num_heads,
                    time_features=self.time_features, mask_weights=list(self.mask_weights),
                    attention_mask=self.attention_mask, method=self.method, steps=self.steps,
                    log_prob_method=self.log_prob_method, log_prob_steps=self.log_prob_steps, rtol=self.rtol,
                    atol=self.atol, exact_trace_max_dim=self.exact_trace_max_dim,
                    hutchinson_probes=self.hutchinson_probes)

    # ----------------------------------------------------------------- networks
    @property
    def y_features(self) -> int:
        """D_y, the number of y's tokens (the first ones)."""
        return self.y_shape[0]

    @property
    def tokens(self) -> int:
        """T = D_y + D_c."""
        return self.y_shape[0] + (self.context_features or 0)

    def _build(self) -> None:
        if len(self.y_shape) != 1:
            raise ValueError(f"Simformer models vectors [n, d] (one token per entry); got y_shape {self.y_shape}")
        check_attention_mask(self.attention_mask, self.tokens)
        self.net = TokenTransformer(self.tokens, self.hidden_features, self.num_blocks, self.num_heads,
                                    self.time_features, self.attention_mask)

    def target_mask(self, device: torch.device | None = None) -> Tensor:
        """m_target ``[T]``: y latent, c observed."""
        mask = torch.zeros(self.tokens, dtype=torch.bool, device=device)
        mask[self.y_features:] = True
        return mask

    # ----------------------------------------------------------------- the joint field
    def joint_velocity(self, z: Tensor, tau: Tensor, observed: Tensor) -> Tensor:
        """v_φ(z, τ, m) ``[n, T]`` for z ``[n, T]``, τ ``[n]`` and masks ``observed`` ``[n, T]`` or ``[T]``:
        the Gaussian prediction plus the network's correction on latent tokens, exactly 0 on observed ones."""
        self._check_built()
        observed = observed.to(z.device).expand(z.shape[0], self.tokens)
        v = gaussian_velocity(z, tau) + self.net(z, tau, observed)
        return v.masked_fill(observed, 0.0)

    @property
    def tau_range(self) -> tuple[float, float]:
        return (0.0, 1.0)

    def velocity(self, y: Tensor, tau: Tensor, c: Tensor | None) -> Tensor:
        """The target conditional's v(y, τ, c) ``[n, D_y]``: the latent part of v_φ((y, c), τ, m_target)."""
        z = y if c is None else torch.cat([y, c.to(y.dtype)], dim=1)
        return self.joint_velocity(z, tau, self.target_mask(y.device))[:, : self.y_features]

    def conditional(self, observed: Tensor) -> SimformerConditional:
        """The conditional p(z_latent | z_observed) for one mask ``observed`` ``[T]`` (bool) as a
        :class:`~simgen.models.cnf.ContinuousFlow` whose y is the latent tokens ``[n, #latent]`` and whose
        context is the observed ones ``[n, #observed]`` (``None`` when nothing is observed), both in token order;
        it shares this family's network and ODE settings."""
        return SimformerConditional(self, observed)

    # ----------------------------------------------------------------- training
    def draw_masks(self, n: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
        """``[n, T]`` condition masks (``True``: observed), one kind per row drawn with ``mask_weights``."""
        t, dy = self.tokens, self.y_features
        kind = multinomial(torch.tensor(self.mask_weights, device=device), n, replacement=True, generator=generator)
        if self.context_features is None:  # no context: target and reverse would be the joint
            kind = torch.where((kind == 1) | (kind == 2), torch.zeros_like(kind), kind)
        is_y = torch.arange(t, device=device) < dy
        random = rand(n, t, generator=generator, device=device) < 0.5
        # at least one latent token in a random mask
        free = randint(0, t, (n,), generator=generator, device=device)
        random[torch.arange(n, device=device), free] = False
        masks = torch.zeros(n, t, dtype=torch.bool, device=device)
        masks = torch.where((kind == 1)[:, None], ~is_y[None, :].expand(n, t), masks)
        masks = torch.where((kind == 2)[:, None], is_y[None, :].expand(n, t), masks)
        return torch.where((kind == 3)[:, None], random, masks)

    def flow_loss(self, y: Tensor, c: Tensor | None) -> Tensor:
        generator = validation_generator(self, y.device)
        y, c = validation_copies(self, y, c)
        n, dy = y.shape[0], self.y_features
        if self.training:
            observed = self.draw_masks(n, y.device, generator)
        else:  # validation: the target conditional only (see the module docstring)
            observed = self.target_mask(y.device).expand(n, self.tokens)
        if c is None:
            z0 = y
        else:
            # no gradient into a learned embedding from rows that generate the context's tokens
            c_generated = (~observed[:, dy:]).any(dim=1, keepdim=True)
            z0 = torch.cat([y, torch.where(c_generated, c.detach(), c).to(y.dtype)], dim=1)
        tau = stratified_uniform(n, y.device, y.dtype, generator=generator)
        eps = randn(z0.shape, generator=generator, device=y.device, dtype=y.dtype)
        t = tau[:, None]
        z_tau = torch.where(observed, z0, (1 - t) * z0 + t * eps)
        latent = (~observed).to(y.dtype)
        residual = (self.joint_velocity(z_tau, tau, observed) - (eps - z0)) * latent
        return residual.pow(2).sum() / latent.sum().clamp(min=1.0)


class SimformerConditional(ContinuousFlow):
    r"""One conditional of a :class:`Simformer`, p(z_latent | z_observed) for a fixed mask, as a ContinuousFlow:
    y = the latent tokens ``[n, #latent]``, context = the observed tokens ``[n, #observed]`` (``None`` when none
    is observed), both in token order. Its velocity is the latent part of the Simformer's v_φ(z, τ, m), so
    ``sample`` and ``log_prob`` are the shared ODE paths. It is not trained (``loss`` refuses)."""

    family = ""

    def __init__(self, parent: Simformer, observed: Tensor) -> None:
        settings = {k: v for k, v in parent.config().items()
                    if k not in ("num_heads", "mask_weights", "attention_mask")}
        super().__init__(**settings)
        parent._check_built()
        observed = torch.as_tensor(observed)
        if observed.dtype != torch.bool or tuple(observed.shape) != (parent.tokens,):
            raise ValueError(f"the condition mask must be [{parent.tokens}] booleans; got dtype {observed.dtype}, "
                             f"shape {list(observed.shape)}")
        if bool(observed.all()):
            raise ValueError("the condition mask observes every token: there is nothing to generate")
        self.parent = [parent]  # a list, so that the parent's weights are not registered twice
        self.observed = observed.to(parent.device)
        self.latent_index = torch.nonzero(~self.observed)[:, 0]
        self.observed_index = torch.nonzero(self.observed)[:, 0]
        k = int(self.observed.sum())
        self.build((parent.tokens - k,), k if k > 0 else None)

    def _build(self) -> None:  # the network is the parent's
        pass

    @property
    def device(self) -> torch.device:
        return self.parent[0].device

    def config(self) -> dict[str, Any]:
        raise NotImplementedError("a SimformerConditional is a view of a Simformer; save the Simformer")

    @property
    def tau_range(self) -> tuple[float, float]:
        return (0.0, 1.0)

    def assemble(self, y: Tensor, c: Tensor | None) -> Tensor:
        """The joint rows z ``[n, T]`` with the latent tokens from y ``[n, #latent]`` and the observed ones from c."""
        z = y.new_zeros(y.shape[0], self.parent[0].tokens)
        z[:, self.latent_index] = y
        if c is not None:
            z[:, self.observed_index] = c.to(y.dtype)
        return z

    def velocity(self, y: Tensor, tau: Tensor, c: Tensor | None) -> Tensor:
        v = self.parent[0].joint_velocity(self.assemble(y, c), tau, self.observed)
        return v[:, self.latent_index]

    def flow_loss(self, y: Tensor, c: Tensor | None) -> Tensor:
        raise NotImplementedError("a SimformerConditional is not trained; train its Simformer")
