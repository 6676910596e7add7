r"""The joint direction: one all-in-one model of p(θ, x) that samples and evaluates any conditional.

:class:`JointEstimator` trains a :class:`~simgen.models.Simformer` on simulated pairs (θ, x) with random condition
masks (Gloeckler et al. 2024, "All-in-one simulation-based inference", arXiv:2404.09636), so that one fitted
model gives the posterior p(θ | x), the likelihood p(x | θ), and every other conditional of the joint, e.g.
p(θ₁ | x, θ₂) or p(x₃ | x₁, x₂, θ).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from .. import nets
from ..io import register_estimator
from ..models import ConditionalDensity
from ..models.simformer import Simformer
from ..training import TrainingConfig, TrainingHistory
from ..transforms import Dequantize, Standardize, SupportBijection
from ..utils import as_tensor, check_positive_int
from .base import Estimator

__all__ = ["JointEstimator"]


@register_estimator
class JointEstimator(Estimator):
    r"""An all-in-one estimator of the joint p(θ, x) (see the module docstring), over T = d_theta + d_x tokens.

    The tokens are z = (θ, x) in that order: θ's d_theta entries, then x's d_x. A *condition mask* ``[T]`` of
    booleans says which tokens are observed (``True``) and which are generated (``False``):
    ``[False] * d_theta + [True] * d_x`` is the posterior p(θ | x), ``[True] * d_theta + [False] * d_x`` the
    likelihood p(x | θ), all ``False`` the joint.

    As the other estimators, it owns the pre-processing: θ is mapped from the prior's support onto R^d (the
    family's ``"probit"`` map on a box) and standardised, x is standardised; every map is per entry, so each
    token keeps its own bijection and observed tokens pass through it unchanged. The model is a
    :class:`~simgen.models.Simformer` trained by flow matching on the joint (its loss; early stopping follows the
    posterior's validation loss), sampled and evaluated through its ODE (``log_prob`` by the instantaneous change
    of variables, exact trace up to 16 latent tokens).

    Args:
        prior: the prior p(θ) the simulations were drawn from (a torch ``Distribution`` over ``[d_theta]``).
        model: ``"simformer"`` or a :class:`~simgen.models.Simformer` object (its hyper-parameters).
        device: where to train and sample (CUDA when present).
        support_map: how a box prior's support is mapped onto R^d (default the family's, ``"probit"``).

    x must be a vector per simulation (``[n, d_x]``): one token per entry.
    """

    direction = "joint"
    y_is_theta = True

    def __init__(
        self,
        prior: Distribution,
        model: str | ConditionalDensity = "simformer",
        *,
        device: str | torch.device | None = None,
        support_map: str | None = None,
        embedding: nn.Module | None = None,
        x_kind: str | None = None,
        discrete: Any = None,
        linear_baseline: bool = False,
    ) -> None:
        if prior is None:
            raise ValueError("JointEstimator needs the prior the simulations were drawn from")
        spec = model if isinstance(model, ConditionalDensity) else None
        if isinstance(model, str) and model != "simformer" or spec is not None and not isinstance(spec, Simformer):
            raise ValueError(f"JointEstimator's model must be 'simformer' or a Simformer object; got {model!r}")
        # the arguments below exist so that the loader's Estimator.from_config can rebuild the estimator; a joint
        # model has one token per raw x entry, so no embedding, no other kind of x and no linear baseline
        if embedding is not None and not isinstance(embedding, nets.Flatten):
            raise ValueError("JointEstimator reads x entry by entry (one token each): it takes no embedding=")
        if x_kind not in (None, "vector") or discrete or linear_baseline:
            raise ValueError("JointEstimator models vector x ([n, d_x]) with no discrete columns and no linear "
                             f"baseline; got x_kind={x_kind!r}, discrete={discrete!r}, "
                             f"linear_baseline={linear_baseline!r}")
        super().__init__(prior, model, x_kind="vector", device=device, linear_baseline=False,
                         support_map=support_map)

    @property
    def y_kind(self) -> str:
        return "vector"

    # ----------------------------------------------------------------- pre-processing (per token)
    def split(self, theta: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        return theta, x

    def y_parts(self, y_shape: tuple[int, ...], family: ConditionalDensity) -> tuple[
            SupportBijection | None, Dequantize | None, Standardize]:
        """θ is mapped from the prior's support onto R^d, then standardised."""
        return SupportBijection(self.prior, self.support_map), None, Standardize(y_shape)

    def context_parts(self, c_shape: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
        """x is standardised and used entry by entry (no embedding network)."""
        return nets.Flatten(c_shape), Standardize(c_shape)

    @property
    def d_x(self) -> int:
        return self._require_fitted().x_shape[0]

    @property
    def tokens(self) -> int:
        """T = d_theta + d_x."""
        return self.d_theta + self.d_x

    @property
    def family(self) -> Simformer:
        return self._require_fitted().density.density

    # ----------------------------------------------------------------- fitting
    def fit(
        self,
        theta: Any,
        x: Any,
        *,
        config: TrainingConfig | None = None,
        seed: int | None = None,
        progress: bool = True,
        checkpoint: str | os.PathLike | None = None,
        **settings: Any,
    ) -> TrainingHistory:
        """Fit the joint model on simulated pairs θ ``[n, d_theta]`` (drawn from the prior), x ``[n, d_x]``.

        ``settings`` override :class:`~simgen.training.TrainingConfig` fields (``max_epochs=``, ...);
        ``checkpoint=`` saves and resumes the training state as :meth:`PosteriorEstimator.fit` does. Fitting
        again starts from fresh networks.
        """
        theta, x = self.check_pairs(theta, x)
        if x.dim() != 2:
            raise ValueError(f"JointEstimator needs vector x [n, d_x] (one token per entry); got {list(x.shape)}")
        outside = ~SupportBijection(self.prior).contains(theta)
        if outside.any():
            raise ValueError(f"{int(outside.sum())} of {theta.shape[0]} theta rows lie outside the prior's support "
                             f"(first: {theta[outside][0].tolist()}); a joint model needs θ drawn from its prior")
        seed = self.run_seed(seed, checkpoint)
        self.theta_shape, self.x_shape = tuple(theta.shape[1:]), tuple(x.shape[1:])
        return self._fit((theta, x), config, seed, progress, settings, checkpoint=checkpoint)

    # ----------------------------------------------------------------- masks and values
    def check_mask(self, condition_mask: Any) -> Tensor:
        """``condition_mask`` as a ``[T]`` bool tensor; a ValueError for a non-boolean mask, a wrong length or a
        mask that observes every token."""
        t = self.tokens
        mask = torch.as_tensor(condition_mask)
        if mask.dtype != torch.bool:
            raise ValueError(f"condition_mask must hold booleans (True: observed); got dtype {mask.dtype}")
        if tuple(mask.shape) != (t,):
            raise ValueError(f"condition_mask must have shape [{t}] (d_theta = {self.d_theta} θ tokens, then "
                             f"d_x = {self.d_x} x tokens); got {list(mask.shape)}")
        if bool(mask.all()):
            raise ValueError("condition_mask observes every token: leave at least one False (to generate)")
        return mask

    def check_values(self, values: Any, mask: Tensor, name: str = "values") -> Tensor:
        """``values`` as ``[m, T]`` float rows (a ``[T]`` row gets its batch dimension); its observed entries must
        be finite and, for θ, inside the prior's support (generated entries are ignored and may be NaN)."""
        t = self.tokens
        values = as_tensor(values, name)
        if values.dim() == 1:
            values = values[None]
        if values.dim() != 2 or values.shape[1] != t or values.shape[0] == 0:
            raise ValueError(f"{name} must have shape [{t}] or [m, {t}] (θ then x); got {list(values.shape)}")
        seen = values[:, mask]
        if not torch.isfinite(seen).all():
            raise ValueError(f"{name} has non-finite observed entries (only entries the mask marks observed must be "
                             "finite)")
        theta = torch.where(mask[: self.d_theta], values[:, : self.d_theta], self._inside_theta())
        if not SupportBijection(self.prior).contains(theta).all():
            raise ValueError(f"{name} has observed θ entries outside the prior's support")
        return values

    def _inside_theta(self) -> Tensor:
        """A θ ``[d_theta]`` inside the support (the standardisation's centre mapped back), on the CPU: a placeholder
        for the θ entries that are not observed, so that the per-entry maps can run on whole rows."""
        density = self.density
        return density.support.inverse(density.y_standardize.loc.detach()[None])[0].cpu()

    def to_tokens(self, values: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Token values u ``[m, T]`` (θ through the support map and standardisation, x standardised) and the
        log-Jacobians log |∂u_k/∂z_k| ``[m, T]`` of each entry, both on the model's device; θ entries not in
        ``mask`` (when given) are replaced by a point inside the support first."""
        d = self.d_theta
        density = self.density
        theta = values[:, :d].double()
        if mask is not None:
            theta = torch.where(mask[:d], theta, self._inside_theta().double())
        theta = theta.to(self.device)
        with torch.enable_grad():  # the per-entry map's derivative, for the Jacobian of each θ token
            theta = theta.requires_grad_(True)
            u_theta = density.support(theta)
            (grad,) = torch.autograd.grad(u_theta.sum(), theta)
        y_std, c_std = density.y_standardize, density.c_standardize
        u = torch.cat([y_std(u_theta.detach().float()), c_std(values[:, d:].float().to(self.device))], dim=1)
        log_det = torch.cat([grad.abs().log().float() - y_std.scale.log(),
                             (-c_std.scale.log()).expand(values.shape[0], -1)], dim=1)
        return u, log_det

    def from_tokens(self, u: Tensor) -> Tensor:
        """Rows in the data's units ``[..., T]`` (on the CPU) from token values u ``[..., T]``."""
        d = self.d_theta
        density = self.density
        lead = u.shape[:-1]
        u = u.reshape(-1, self.tokens).to(self.device)
        theta = density.support.inverse(density.y_standardize.inverse(u[:, :d]))
        x = density.c_standardize.inverse(u[:, d:])
        return torch.cat([theta, x], dim=1).reshape(*lead, self.tokens).cpu()

    # ----------------------------------------------------------------- any conditional
    def sample(self, n: int, condition_mask: Any, values: Any = None, *, generator: torch.Generator | None = None,
               **options: Any) -> Tensor:
        """``n`` draws of the conditional p(z_latent | z_observed) that ``condition_mask`` picks.

        Args:
            n: draws per row of ``values``.
            condition_mask: ``[T]`` booleans over the tokens (θ, x): ``True`` observed, ``False`` generated.
            values: ``[T]`` or ``[m, T]`` rows holding the observed entries (the generated entries are ignored and
                may be NaN); may be left out when nothing is observed.
            generator: fixes the draws.
            options: the ODE's sampling options (``method=``, ``steps=``).

        Returns:
            ``[n, T]`` for one row of ``values`` (or none), ``[m, n, T]`` for ``[m, T]``: whole rows (θ, x) whose
            observed entries are exactly the given values.
        """
        check_positive_int(n)
        mask = self.check_mask(condition_mask)
        batched = values is not None and as_tensor(values, "values").dim() == 2
        if values is None:
            if mask.any():
                raise ValueError("values are needed: condition_mask observes some tokens")
            values = torch.full((self.tokens,), float("nan"))
        values = self.check_values(values, mask)
        u, _ = self.to_tokens(values, mask)
        view = self.family.conditional(mask)
        m = values.shape[0]
        c = u[:, mask] if mask.any() else None
        out = []
        with torch.no_grad():
            for s in range(0, n, 100_000):
                k = min(100_000, n - s)
                if c is None:
                    draws = view.sample(m * k, None, generator=generator, **options).reshape(m, k, -1)
                else:
                    draws = view.sample(k, c, generator=generator, **options)
                out.append(draws.cpu())
        latent = torch.cat(out, dim=1)  # [m, n, #latent]
        z = u.cpu()[:, None, :].expand(m, n, self.tokens).clone()
        z[..., ~mask] = latent
        rows = self.from_tokens(z)
        # observed entries are the given values exactly (not their round trip through the maps)
        rows[..., mask] = values[:, None, mask].expand(m, n, -1).to(rows.dtype)
        return rows if batched else rows[0]

    def posterior_mask(self) -> Tensor:
        """The condition mask of the posterior p(θ | x): ``[T]``, θ's tokens generated, x's observed."""
        return torch.arange(self.tokens) >= self.d_theta

    def sample_posterior(self, n: int, x_obs: Any, *, generator: torch.Generator | None = None,
                         **options: Any) -> Tensor:
        """``n`` posterior draws θ ~ p(θ | x): x_obs ``[d_x]`` → ``[n, d_theta]``, ``[m, d_x]`` → ``[m, n, d_theta]``
        (the conditional of :meth:`posterior_mask`, through :meth:`sample`)."""
        x = as_tensor(x_obs, "x_obs")
        if x.dim() not in (1, 2) or x.shape[-1] != self.d_x:
            raise ValueError(f"x_obs must have shape [{self.d_x}] or [m, {self.d_x}]; got {list(x.shape)}")
        values = torch.cat([x.new_full((*x.shape[:-1], self.d_theta), float("nan")), x], dim=-1)
        return self.sample(n, self.posterior_mask(), values, generator=generator, **options)[..., : self.d_theta]

    def log_prob(self, values: Any, condition_mask: Any, *, generator: torch.Generator | None = None,
                 **options: Any) -> Tensor:
        r"""log p(z_latent | z_observed) ``[n]`` for rows ``values`` ``[n, T]`` (or one ``[T]``), in the data's
        units: the conditional flow's log-density of the latent tokens plus Σ_{k latent} log |∂u_k/∂z_k|;
        −inf where a generated θ entry lies outside the prior's support. ``options`` go to the ODE (``exact=``,
        ``num_probes=``, ``method=``)."""
        mask = self.check_mask(condition_mask)
        values = as_tensor(values, "values")
        if values.dim() == 1:
            values = values[None]
        if values.dim() != 2 or values.shape[1] != self.tokens:
            raise ValueError(f"values must have shape [{self.tokens}] or [n, {self.tokens}]; got "
                             f"{list(values.shape)}")
        if not torch.isfinite(values).all():
            raise ValueError("values must be finite")
        d = self.d_theta
        observed_theta = torch.where(mask[:d], values[:, :d], self._inside_theta())
        if not SupportBijection(self.prior).contains(observed_theta).all():
            raise ValueError("values has observed θ entries outside the prior's support")
        inside = SupportBijection(self.prior).contains(values[:, :d])
        # a generated θ entry outside the support is clamped inside by the map, and its row set to −inf below
        u, log_det = self.to_tokens(values)
        view = self.family.conditional(mask)
        c = u[:, mask] if mask.any() else None
        with torch.no_grad():
            logp = view.log_prob(u[:, ~mask], c, generator=generator, **options)
        logp = (logp + log_det[:, ~mask].sum(dim=1)).cpu()
        return torch.where(inside, logp, torch.full_like(logp, -torch.inf))
