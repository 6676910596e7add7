r"""Neural ratio estimation: a classifier d(θ, x) whose logit is the likelihood-to-evidence ratio
r(θ, x) = p(x | θ) / p(x) = p(θ | x) / p(θ).

A classifier trained to tell joint pairs (θ, x) ~ p(θ, x) from marginal pairs (θ, x) ~ p(θ) p(x) learns, at its
optimum, the density ratio of the two; the posterior is then p(θ | x) ∝ p(θ) r(θ, x), sampled by MCMC
(:class:`~simgen.mcmc.MCMCPosterior`). Marginal pairs are made inside each batch by pairing x_i with the θ of
other rows. The variants differ in the classification task (:data:`RATIO_MODELS`):

* ``"nre_a"`` (Hermans, Begy & Louppe 2020, arXiv:1903.04057): binary cross-entropy, one marginal pair per joint
  pair; the logit f = log r.
* ``"nre_b"`` (Durkan, Murray & Papamakarios 2020, arXiv:2002.03712): which of K θ's was simulated with x
  (K-way softmax over the logits); f = log r + c(x), an unknown constant per x, which the posterior ignores.
* ``"nre_c"`` (Miller, Weniger & Forré 2022, arXiv:2210.06170): K + 1 classes, "all K θ's are marginal" or
  "θ_k is the joint one", with odds γ = K p_K / p_0; f = log r exactly, with K contrastive θ's per batch row.
* ``"bnre"`` (Delaunoy et al. 2022, arXiv:2208.13624): NRE-A plus λ (E_joint[σ(f)] + E_marg[σ(f)] − 1)², the
  balance condition a Bayes-optimal classifier meets; it pushes the classifier towards conservative
  (wider) posteriors when it is not optimal.
* ``"tre"`` (telescoping ratio estimation, Rhodes, Xu & Gutmann 2020, arXiv:2006.12204): when the posterior is
  far narrower than the prior, joint and marginal pairs are so easily told apart that one classifier learns only
  a blurred ratio (the "density chasm"). TRE bridges the chasm with M + 1 waymarks p_0, …, p_M, the pairs
  (θ_m, x) with θ_m = √(1 − α_m²) θ + α_m θ̃ in standardised θ, θ̃ another row's θ, 0 = α_0 < … < α_M = 1
  (p_0 the joint, p_M the marginal), and one binary classifier head f_m per neighbouring pair, trained to tell
  p_{m−1} from p_m; then log r = log p_0 / p_M = Σ_m f_m. Each head faces a small ratio; the α_m are spaced
  geometrically from :data:`TRE_ALPHA_MIN` to 1, and the heads share one network (the head's index is an input).

``"nre"`` names the recommended variant (the README's measurement says why).
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution

from .. import nets
from ..io import register_estimator
from ..training import TrainingConfig, TrainingHistory
from ..transforms import Standardize
from ..utils import broadcast_rows, default_device
from .base import Estimator, check_prior, infer_x_kind, resolve_x_kind, training_config, x_context_parts
from .gold import DEFAULT_GOLD_WEIGHT, GOLD_MODES, check_gold_options, gold_training_defaults

__all__ = ["RatioEstimator", "RatioClassifier", "RATIO_MODELS", "RATIO_OPTIONS", "RECOMMENDED_RATIO_MODEL",
           "TRE_ALPHA_MIN", "waymark_weights"]

#: early-stopping patience of the classifier's training (epochs without a lower validation loss)
RATIO_PATIENCE = 30

#: variant name -> what it is (the names ``RatioEstimator(model=...)`` takes, besides ``"nre"``)
RATIO_MODELS: dict[str, str] = {
    "nre_a": "binary classification of joint vs marginal pairs (Hermans et al. 2020)",
    "nre_b": "K-way contrastive classification (Durkan et al. 2020)",
    "nre_c": "(K+1)-way contrastive classification with a marginal class (Miller et al. 2022)",
    "bnre": "NRE-A with the balance penalty (Delaunoy et al. 2022)",
    "tre": "telescoping ratio estimation: binary classifiers between waymarks from joint to marginal pairs "
           "(Rhodes et al. 2020)",
}
#: the variant ``model="nre"`` stands for
RECOMMENDED_RATIO_MODEL = "tre"

#: the classifier's and its task's options (``RatioEstimator``'s keyword arguments a configuration may set)
RATIO_OPTIONS = ("num_classes", "gamma", "regularization", "num_waymarks", "hidden_features", "num_blocks",
                 "activation")

#: ``tre``'s smallest mixing weight α_1: the first waymark moves θ by this share of another row's (standardised) θ
TRE_ALPHA_MIN = 0.003

#: per-variant defaults of the classification task's options
_TASK_DEFAULTS: dict[str, dict[str, float]] = {
    "nre_a": {},
    "nre_b": {"num_classes": 10},
    "nre_c": {"num_classes": 5, "gamma": 1.0},
    "bnre": {"regularization": 100.0},
    "tre": {"num_waymarks": 8},
}


def _check_variant(model: Any) -> str:
    if model == "nre":
        return RECOMMENDED_RATIO_MODEL
    if not isinstance(model, str) or model not in RATIO_MODELS:
        raise ValueError(f"model must be 'nre' (the recommended variant, {RECOMMENDED_RATIO_MODEL!r}) or one of "
                         f"{sorted(RATIO_MODELS)}; got {model!r}")
    return model


def task_options(variant: str, num_classes: int | None, gamma: float | None,
                 regularization: float | None, num_waymarks: int | None = None) -> dict[str, float]:
    """The classification task's options for ``variant``, the defaults filled in and the given ones checked."""
    given = {"num_classes": num_classes, "gamma": gamma, "regularization": regularization,
             "num_waymarks": num_waymarks}
    allowed = _TASK_DEFAULTS[variant]
    extra = sorted(k for k, v in given.items() if v is not None and k not in allowed)
    if extra:
        raise ValueError(f"{variant} takes {sorted(allowed) or 'no task options'}; got {extra}")
    options = {k: (given[k] if given[k] is not None else v) for k, v in allowed.items()}
    if "num_classes" in options:
        k = options["num_classes"]
        if isinstance(k, bool) or not isinstance(k, int) or k < 1 or (variant == "nre_b" and k < 2):
            raise ValueError(f"num_classes must be an int >= {2 if variant == 'nre_b' else 1}; got {k!r}")
    if "num_waymarks" in options:
        m = options["num_waymarks"]
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ValueError(f"num_waymarks must be an int >= 1; got {m!r}")
    if "gamma" in options and not (math.isfinite(options["gamma"]) and options["gamma"] > 0):
        raise ValueError(f"gamma must be a positive number; got {options['gamma']!r}")
    if "regularization" in options and not (math.isfinite(options["regularization"])
                                            and options["regularization"] >= 0):
        raise ValueError(f"regularization must be a number >= 0; got {options['regularization']!r}")
    return options


def waymark_weights(num_waymarks: int) -> Tensor:
    r"""TRE's mixing weights ``[M + 1]``: α_0 = 0 (the joint), α_m = a^{1 − (m−1)/(M−1)} for m = 1…M with
    a = :data:`TRE_ALPHA_MIN` (geometric, so that every head faces a ratio of like size whatever the posterior's
    width), α_M = 1 (the marginal); M = 1 gives NRE-A's single classifier."""
    m = num_waymarks
    if m == 1:
        return torch.tensor([0.0, 1.0])
    steps = torch.arange(m, dtype=torch.float64) / (m - 1)
    return torch.cat([torch.zeros(1), (TRE_ALPHA_MIN ** (1.0 - steps)).float()])


class RatioClassifier(nn.Module):
    r"""The classifier f(θ, x) = MLP([standardised θ, embedding(standardised x)]) and its training loss; for
    ``tre``, f(θ, x) = Σ_m MLP([standardised θ, embedding(standardised x), e_m]), e_m the one-hot index of head m.

    ``loss(θ, x)`` (what :func:`simgen.training.train` minimises) pairs x_i with θ_{(i+s) mod n} for shifts s of
    the batch's rows as its marginal pairs: random distinct shifts in training mode, shifts 1…K in eval mode, so
    that the validation loss the trainer compares across epochs is a deterministic function of the weights.

    Args:
        variant: one of :data:`RATIO_MODELS`.
        d_theta: θ's dimension.
        embedding: x ``[n, *x_shape]`` → features ``[n, f]``.
        x_standardize: x's standardisation (fitted before training).
        features: f, the embedding's output width.
        hidden_features, num_blocks, activation: the residual MLP on ``[θ, features]``.
        num_classes, gamma, regularization, num_waymarks: the task's options (see the module docstring).
    """

    #: what :meth:`simgen.estimators.Estimator._fit` reads of a model (with :meth:`initialize`,
    #: :meth:`mapped_context` and the standardisations): no support map, no dequantisation and no linear baseline
    #: before the classifier
    support = dequantize = residual = None

    def __init__(self, variant: str, d_theta: int, embedding: nn.Module, x_standardize: nn.Module, features: int,
                 *, hidden_features: int = 64, num_blocks: int = 2, activation: str = "relu",
                 num_classes: int = 1, gamma: float = 1.0, regularization: float = 0.0,
                 num_waymarks: int = 1) -> None:
        super().__init__()
        self.variant = variant
        self.num_classes, self.gamma, self.regularization = int(num_classes), float(gamma), float(regularization)
        self.num_waymarks = int(num_waymarks)
        self.theta_standardize = Standardize((d_theta,))
        self.x_standardize = x_standardize
        self.embedding = embedding
        # TRE's heads share the network, told apart by a one-hot head index appended to the input
        self.num_heads = self.num_waymarks if variant == "tre" else 0
        self.net = nets.ResidualMLP(d_theta + features + self.num_heads, 1, hidden_features, num_blocks,
                                    activation=activation)

    # the names the estimators' fitting code uses for the modelled rows (θ here) and the context (x)
    @property
    def y_standardize(self) -> Standardize:
        return self.theta_standardize

    @property
    def c_standardize(self) -> nn.Module:
        return self.x_standardize

    def mapped_context(self, c: Tensor) -> Tensor:
        """x as it is: no fixed map comes before its standardisation (the estimators' fitting code asks every
        density, :meth:`~simgen.models.TransformedDensity.mapped_context`)."""
        return c

    def initialize(self, y: Tensor, c: Tensor) -> None:
        """No data-dependent start beyond the standardisations (what the estimators call before training)."""

    def features(self, x: Tensor) -> Tensor:
        """The embedded, standardised x ``[n, f]``."""
        return self.embedding(self.x_standardize(x))

    def logits(self, theta: Tensor, h: Tensor) -> Tensor:
        """f(θ, x) for θ ``[n, K, d]`` (or ``[n, d]``) and x's features h ``[n, f]``: ``[n, K]`` (or ``[n]``);
        for ``tre`` the sum of the heads, Σ_m f_m(θ, x)."""
        u = self.theta_standardize(theta)
        h = h.unsqueeze(1).expand(-1, u.shape[1], -1) if u.dim() == 3 else h
        if self.num_heads:
            m = self.num_heads
            heads = torch.eye(m, dtype=u.dtype, device=u.device).expand(*u.shape[:-1], m, m)
            rows = torch.cat([u.unsqueeze(-2).expand(*u.shape[:-1], m, -1),
                              h.unsqueeze(-2).expand(*h.shape[:-1], m, -1), heads], dim=-1)
            return self.net(rows).squeeze(-1).sum(-1)
        return self.net(torch.cat([u, h], dim=-1)).squeeze(-1)

    def forward(self, theta: Tensor, x: Tensor) -> Tensor:
        """f(θ[i], x[i]) ``[n]``."""
        return self.logits(theta, self.features(x))

    @property
    def num_contrast(self) -> int:
        """θ's of other rows each x is paired with: 1 (NRE-A, BNRE, TRE), K − 1 (NRE-B), K (NRE-C)."""
        return {"nre_a": 1, "bnre": 1, "tre": 1, "nre_b": self.num_classes - 1,
                "nre_c": self.num_classes}[self.variant]

    def _shifts(self, n: int, k: int) -> Tensor:
        """``k`` row shifts in 1…n − 1, distinct when the batch has room (a batch's last rows may not)."""
        if n - 1 < k:
            return torch.arange(k) % (n - 1) + 1
        if self.training:
            return 1 + torch.randperm(n - 1)[:k]
        return torch.arange(1, k + 1)

    def loss(self, theta: Tensor, x: Tensor) -> Tensor:
        """The variant's classification loss on a batch of joint pairs θ ``[n, d]``, x ``[n, *x_shape]``."""
        n = theta.shape[0]
        h = self.features(x)
        if self.variant == "tre":
            return self._telescoping_loss(theta, h)
        joint = self.logits(theta, h)  # [n]
        if n < 2:  # no other row to pair x with: nothing to contrast
            return joint.sum() * 0.0
        k = self.num_contrast
        shifts = self._shifts(n, k).to(theta.device)
        idx = (torch.arange(n, device=theta.device)[:, None] + shifts[None, :]) % n  # [n, k]: other rows
        marginal = self.logits(theta[idx], h)  # [n, k]
        if self.variant in ("nre_a", "bnre"):
            m = marginal[:, 0]
            loss = 0.5 * (F.softplus(-joint) + F.softplus(m)).mean()
            if self.variant == "bnre":
                balance = torch.sigmoid(joint).mean() + torch.sigmoid(m).mean() - 1.0
                loss = loss + self.regularization * balance.square()
            return loss
        if self.variant == "nre_b":
            # the joint θ among K − 1 others: cross-entropy of picking it
            logits = torch.cat([joint[:, None], marginal], dim=1)
            return (torch.logsumexp(logits, dim=1) - joint).mean()
        # NRE-C: class 0 "all K marginal" (θ's of K other rows) against class k "θ_k joint" (the true θ and K − 1
        # of those others), with q(y=0) = 1 / (1 + γ/K Σ_k r_k) and q(y=k) = γ/K r_k / (1 + γ/K Σ_j r_j)
        log_gamma, log_k = math.log(self.gamma), math.log(k)
        pad = torch.full((n, 1), log_k, dtype=joint.dtype, device=joint.device)
        with_joint = torch.cat([joint[:, None], marginal[:, : k - 1]], dim=1)
        log_q_marginal = log_k - torch.logsumexp(torch.cat([log_gamma + marginal, pad], dim=1), dim=1)
        log_q_joint = log_gamma + joint - torch.logsumexp(torch.cat([log_gamma + with_joint, pad], dim=1), dim=1)
        p_marginal, p_joint = 1.0 / (1.0 + self.gamma), self.gamma / (1.0 + self.gamma)
        return -(p_marginal * log_q_marginal + p_joint * log_q_joint).mean()

    def _telescoping_loss(self, theta: Tensor, h: Tensor) -> Tensor:
        """TRE's loss: Σ_m of head m's binary cross-entropy between waymarks m − 1 and m, all built from the
        batch's joint pairs and one other row's θ (the same pairs for every head, as Rhodes et al. 2020)."""
        n, m = theta.shape[0], self.num_heads
        if n < 2:  # no other row's θ to mix in: nothing to contrast
            return self.logits(theta, h).sum() * 0.0
        u = self.theta_standardize(theta)
        other = u[(torch.arange(n, device=u.device) + self._shifts(n, 1).to(u.device)) % n]
        alpha = waymark_weights(m).to(u)
        waymarks = (1.0 - alpha.square()).sqrt()[:, None, None] * u + alpha[:, None, None] * other  # [m+1, n, d]
        heads = torch.eye(m, dtype=u.dtype, device=u.device)[:, None, :].expand(m, n, m)
        hh = h.expand(m, -1, -1)
        nearer = self.net(torch.cat([waymarks[:-1], hh, heads], dim=-1)).squeeze(-1)  # head j on p_{j-1}: [m, n]
        farther = self.net(torch.cat([waymarks[1:], hh, heads], dim=-1)).squeeze(-1)  # head j on p_j
        return 0.5 * (F.softplus(-nearer) + F.softplus(farther)).mean(dim=1).sum()

    def config(self) -> dict[str, Any]:
        mlp = self.net.config()
        return {"variant": self.variant, "hidden_features": mlp["hidden_features"], "num_blocks": mlp["num_blocks"],
                "activation": mlp["activation"], "num_classes": self.num_classes, "gamma": self.gamma,
                "regularization": self.regularization, "num_waymarks": self.num_waymarks}


@register_estimator
class RatioEstimator(Estimator):
    r"""Neural ratio estimation: a classifier d(θ, x) = σ(f(θ, x)) whose logit estimates
    log r(θ, x) = log p(x | θ) − log p(x), and the posterior p(θ | x_obs) ∝ p(θ) Π_i r(θ, x_obs,i) by MCMC.

    Trained by :func:`simgen.training.train` (the same trainer, early stopping and progress bar as the other
    estimators) on the classifier's loss (:class:`RatioClassifier`); θ and x are standardised and x goes through
    the same embedding a :class:`~simgen.PosteriorEstimator` would use (maps, sets, sequences). It is not a
    :class:`~simgen.models.ConditionalDensity`: it has ``log_ratio`` instead of ``log_prob`` and no ``sample``;
    ``posterior()`` gives an object with both (:class:`~simgen.mcmc.MCMCPosterior`), which every diagnostic
    takes.

    θ may come from any distribution whose support covers the prior's (a proposal, a store drawn from one):
    the classifier then learns p(x | θ) / p̃(x), with p̃ the proposal's evidence, which differs from r by a
    constant in θ, so the posterior is unchanged (Durkan et al. 2020).

    Args:
        prior: p(θ), a torch ``Distribution`` with event shape ``[d_theta]``.
        model: ``"nre"`` (the recommended variant, :data:`RECOMMENDED_RATIO_MODEL`) or one of
            :data:`RATIO_MODELS`: ``"nre_a"``, ``"nre_b"``, ``"nre_c"``, ``"bnre"``, ``"tre"``.
        embedding: module mapping x ``[n, *x_shape]`` to features ``[n, f]`` (default from ``x_kind``).
        x_kind: ``"vector"``, ``"map"``, ``"set"`` or ``"sequence"`` (default: from ``simulator`` or x's shape).
        simulator: optional simulator whose ``x_kind`` fills the above.
        device: where to train and evaluate (CUDA when present).
        num_classes: K, the contrastive θ's per x (``nre_b``: default 10; ``nre_c``: default 5).
        gamma: ``nre_c``'s odds γ = K p_K / p_0 of a joint class against the marginal one (default 1).
        regularization: ``bnre``'s balance weight λ (default 100, as Delaunoy et al.).
        num_waymarks: ``tre``'s M, the classifier heads between the joint and the marginal (default 8).
        hidden_features: width of the classifier's residual MLP.
        num_blocks: residual blocks of the classifier's MLP.
        activation: the classifier's activation; a smooth one (SiLU) gives a smooth log ratio, which MALA's
            gradients and a quadratic log ratio both favour.
        gold: train on each simulation's gold (Brehmer et al. 2020, arXiv:1805.12244; ``simgen.simulate(...,
            gold=True)``), α times the terms added to the classification loss (:mod:`simgen.estimators.gold`):
            ``"score"``, the score term α E‖σ⁻¹ ⊙ (∇_θ f(θ, x) − t)‖² on the joint score t(x, z | θ), σ its
            standard deviation (it holds for every variant: ∇_θ f = ∇_θ log p(x | θ) whether or not f carries a
            constant c(x)); ``"ratio"``, the ratio term on the joint log ratio L = log p(x, z | θ) −
            log p(x, z | θ_ref) (``simulate(..., gold_reference=θ_ref)``): f(θ_ref, x) − f(θ, x) estimates
            log p(x | θ_ref)/p(x | θ) for every variant (NRE-B's c(x) cancels), and α E[ℓ(f(θ_ref, x) − f(θ, x),
            e^{−L})] is the importance-weighted cross-entropy of θ's data against θ_ref's, whose population
            minimiser is the true log ratio (the module docstring of :mod:`simgen.estimators.gold` has the
            argument and why this form rather than the squared error); ``"ratio+score"``, both (RASCAL/ALICES).
        gold_weight: α (default :data:`~simgen.estimators.gold.DEFAULT_GOLD_WEIGHT`, 0.2).
    """

    direction = "ratio"
    y_is_theta = True
    GOLD_MODES = GOLD_MODES

    def __init__(
        self,
        prior: Distribution,
        model: str = "nre",
        *,
        embedding: nn.Module | None = None,
        x_kind: str | None = None,
        simulator: Any | None = None,
        device: str | torch.device | None = None,
        num_classes: int | None = None,
        gamma: float | None = None,
        regularization: float | None = None,
        num_waymarks: int | None = None,
        hidden_features: int = 64,
        num_blocks: int = 2,
        activation: str = "silu",
        gold: str | None = None,
        gold_weight: float = DEFAULT_GOLD_WEIGHT,
    ) -> None:
        # Estimator.__init__ builds a density family; a ratio estimator has a classifier instead, so it sets the
        # attributes the shared checks, fitting and saving read itself.
        check_prior(prior)
        self.gold, self.gold_weight = check_gold_options(gold, gold_weight, self.GOLD_MODES)
        self.variant = _check_variant(model)
        self.task = task_options(self.variant, num_classes, gamma, regularization, num_waymarks)
        if min(hidden_features, num_blocks) < 1:
            raise ValueError(f"hidden_features and num_blocks must be >= 1; got {hidden_features}, {num_blocks}")
        self.network = {"hidden_features": int(hidden_features), "num_blocks": int(num_blocks),
                        "activation": activation}
        nets.ResidualMLP(1, 1, **self.network)  # validate the activation name early
        x_kind = resolve_x_kind(x_kind, simulator)
        self.prior = prior
        self.model_spec = self.requested_model = model
        self.choice = None  # a ratio estimator names its variant; model="auto" is for the density estimators
        self.embedding = embedding
        self.x_kind = x_kind
        self._discrete_given, self.discrete = True, ()
        self.device = torch.device(device) if device is not None else default_device()
        self.linear_baseline = False
        self.support_map = None
        self.theta_shape: tuple[int, ...] | None = None
        self.x_shape: tuple[int, ...] | None = None
        self.density: RatioClassifier | None = None
        self.history: TrainingHistory | None = None
        self.validity = None

    @property
    def y_kind(self) -> str:
        return "vector"

    @property
    def log_prob_kind(self) -> str:
        """``"exact"``: the log ratio is one pass of the classifier (no ODE, no importance sampling)."""
        return "exact"

    def training_defaults(self) -> dict[str, Any]:
        """Early stopping with :data:`RATIO_PATIENCE`: the classifier's validation loss keeps falling slowly long
        after its first plateau, and a classifier stopped there gives a posterior far wider than the data allow
        (measured in the README's "Neural ratio estimation")."""
        defaults = {"patience": RATIO_PATIENCE}
        return gold_training_defaults(defaults) if self.gold is not None else defaults

    # ----------------------------------------------------------------- the classifier
    def split(self, theta: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        return theta, x

    def context_parts(self, c_shape: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
        """x's embedding and standardisation, as a posterior estimator's."""
        return x_context_parts(self.x_kind, c_shape, self.embedding)

    def make_density(self, y_shape: tuple[int, ...], c_shape: tuple[int, ...]) -> RatioClassifier:
        """A fresh classifier for θ ``[n, *y_shape]`` and x ``[n, *c_shape]``."""
        embedding, x_std = self.context_parts(c_shape)
        return RatioClassifier(self.variant, math.prod(y_shape), embedding, x_std,
                               nets.output_features(embedding, c_shape), **self.network, **self.task)

    # ----------------------------------------------------------------- fitting
    def fit(
        self,
        theta: Any,
        x: Any = None,
        *,
        config: TrainingConfig | None = None,
        seed: int | None = None,
        progress: bool = True,
        max_memory_gb: float | None = None,
        checkpoint: str | os.PathLike | None = None,
        gold: Any = None,
        gold_reference: Any = None,
        **settings: Any,
    ) -> TrainingHistory:
        """Fit the classifier on simulated pairs θ ``[n, d_theta]``, x ``[n, *x_shape]``, or on a campaign store
        (``fit("runs.h5")``: its valid rows, in memory or streamed as :meth:`PosteriorEstimator.fit` does; a
        store drawn from a proposal needs no ``proposal=``, see the class docstring).

        ``settings`` override :class:`~simgen.training.TrainingConfig` fields (``batch_size=``, ``max_epochs=``,
        ...); a batch must hold more rows than the contrastive θ's per x. Fitting again starts afresh.
        ``checkpoint=`` saves and resumes the training state as :meth:`PosteriorEstimator.fit` does. With
        ``gold=`` set on the estimator, ``gold`` is the dict ``simulate(..., gold=True)`` returned and, for the
        ratio term, ``gold_reference`` the θ_ref ``[k, d_theta]`` given to that ``simulate`` (a store brings its
        own gold and references).
        """
        seed = self.run_seed(seed, checkpoint)
        if x is None:
            if gold is not None or gold_reference is not None:
                raise ValueError("fit(store) reads the store's own gold: pass gold= and gold_reference= only with "
                                 "fit(theta, x)")
            return self._fit_store(theta, config, seed, progress, settings, max_memory_gb, None, checkpoint)[0]
        return self._fit_pairs(theta, x, config, seed, progress, settings, None, checkpoint, gold=gold,
                               gold_reference=gold_reference)

    def gold_log_density(self, model: nn.Module, y: Tensor, c: Tensor) -> Tensor:
        """The classifier's logit f(θ, x), whose θ-gradient is the score ∇_θ log p(x | θ)."""
        return model(y, c)

    def gold_log_ratio(self, model: nn.Module, theta: Tensor, x: Tensor, reference: Tensor) -> Tensor:
        r"""f(θ_ref,j, x_i) − f(θ_i, x_i) ``[n, k]``: the classifier's log p(x | θ_ref)/p(x | θ), c(x) cancelled
        (θ ``[n, d]``, x ``[n, *x_shape]``, θ_ref ``[k, d]``; x embedded once)."""
        h = model.features(x)
        f_theta = model.logits(theta, h)  # [n]
        f_ref = model.logits(reference.to(theta)[None].expand(theta.shape[0], -1, -1), h)  # [n, k]
        return f_ref - f_theta[:, None]

    def store_weights(self, store: Any, proposal: Distribution | None) -> None:
        """None: the posterior p(θ) r(θ, x) does not depend on the distribution θ was drawn from."""
        return None

    def _fit_pairs(self, theta: Any, x: Any, config: TrainingConfig | None, seed: int | None, progress: bool,
                   settings: dict[str, Any], weight_fn: Any = None, checkpoint: Any = None,
                   gold: Any = None, gold_reference: Any = None) -> TrainingHistory:
        theta, x = self.check_pairs(theta, x)
        columns, reference = self.check_gold_fit(gold, theta, gold_reference)
        batch_size = training_config(config, settings).batch_size
        contrast = {"nre_b": self.task.get("num_classes", 1) - 1, "nre_c": self.task.get("num_classes", 1)}.get(
            self.variant, 1)
        if batch_size is not None and batch_size <= contrast:
            raise ValueError(f"batch_size must exceed the {contrast} contrastive θ's per x of {self.variant}; "
                             f"got {batch_size}")
        self.theta_shape, self.x_shape = tuple(theta.shape[1:]), tuple(x.shape[1:])
        self.x_kind = self.x_kind or infer_x_kind(self.x_shape)
        return self._fit((theta, x), config, seed, progress, settings, checkpoint=checkpoint, gold=columns,
                         gold_reference=reference)

    # ----------------------------------------------------------------- the ratio
    def log_ratio(self, theta: Any, x: Any) -> Tensor:
        r"""The classifier's logit f(θ[i], x[i]) ``[n]``: log r(θ, x) = log p(x | θ) − log p(x) for ``nre_a``,
        ``nre_c`` and ``bnre``; log r(θ, x) + c(x) for ``nre_b``. A single θ or x row is broadcast."""
        theta, x = broadcast_rows(self.check_theta(theta), self.check_x(x), "theta", "x")
        with torch.no_grad():
            return self.density(theta.to(self.device), x.to(self.device)).cpu()

    def log_likelihood(self, theta: Tensor, x_obs: Tensor, *, generator: torch.Generator | None = None,
                       grad: bool = False) -> Tensor:
        r"""Σ_i f(θ_b, x_obs,i) for each θ row: θ ``[B, d_theta]``, x_obs ``[m, *x_shape]`` → ``[B]``: the
        log-likelihood up to a constant in θ, which is what :class:`~simgen.mcmc.MCMCPosterior` needs.

        Runs on the model's device without input checks (the MCMC hot path); differentiable in θ with
        ``grad=True``. ``generator`` is unused (the classifier is deterministic).
        """
        m, b = x_obs.shape[0], theta.shape[0]
        with torch.set_grad_enabled(grad):
            h = self.density.features(x_obs.to(self.device))  # [m, f], once for all θ
            theta = theta.to(self.device)
            return self.density.logits(theta[:, None, :].expand(b, m, -1).transpose(0, 1), h).sum(dim=0)

    def posterior(self, **mcmc: Any) -> Any:
        r"""p(θ | x_obs) ∝ p(θ) Π_i r(θ, x_obs,i), sampled by MCMC over many chains (MALA by default).

        ``mcmc`` sets :class:`~simgen.mcmc.MCMCPosterior`'s options (``method=``, ``num_chains=``, ``warmup=``,
        ``thin=``, ``progress=``, ...; see ``LikelihoodEstimator.posterior``).
        """
        from ..mcmc import MCMCPosterior

        self._require_fitted()
        return MCMCPosterior(self, self.prior, **mcmc)

    # ----------------------------------------------------------------- saving and loading
    def config(self) -> dict[str, Any]:
        """JSON description of the fitted estimator (variant, classifier, shapes, kinds); see :mod:`simgen.io`."""
        self._require_fitted()
        return {
            "direction": self.direction,
            "classifier": self.density.config(),
            "theta_shape": list(self.theta_shape),
            "x_shape": list(self.x_shape),
            "x_kind": self.x_kind,
            "embedding": nets.network_config(self.density.embedding),
            "history": self.history.to_dict() if self.history is not None else None,
            "gold": self.gold,
            "gold_weight": self.gold_weight,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], *, prior: Distribution | None, embedding: nn.Module,
                    device: str | torch.device | None = None) -> RatioEstimator:
        """An estimator with a fresh classifier of the shapes ``config`` describes (weights not loaded)."""
        c = config["classifier"]
        task = {k: c[k] for k in _TASK_DEFAULTS[c["variant"]]}
        est = cls(prior, c["variant"], embedding=embedding, x_kind=config["x_kind"], device=device,
                  hidden_features=c["hidden_features"], num_blocks=c["num_blocks"], activation=c["activation"],
                  gold=config.get("gold"), gold_weight=config.get("gold_weight", DEFAULT_GOLD_WEIGHT), **task)
        est.theta_shape, est.x_shape = tuple(config["theta_shape"]), tuple(config["x_shape"])
        est.density = est.make_density(*est.shapes())
        if config.get("history"):
            est.history = TrainingHistory(**config["history"])
        return est

