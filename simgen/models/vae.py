"""Conditional variational auto-encoders, with importance-weighted likelihood estimates."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.distributions import Bernoulli, Distribution, Independent, Normal
from torch.nn import functional as F

from ..nets import ConvDecoder, ConvEncoder, ResidualMLP
from ..utils import bernoulli, randn
from .base import ConditionalDensity
from .fourier import RadialModes, StationaryNormal, radial_modes, radial_power

__all__ = ["VAE"]

LOG_2PI = math.log(2 * math.pi)
PriorKind = Literal["learned", "standard"]
DecoderVariance = Literal["heteroscedastic", "learned"]
DecoderNoise = Literal["diagonal", "fourier"]
Likelihood = Literal["gaussian", "bernoulli"]


class VAE(ConditionalDensity):
    r"""Conditional VAE: the latent-variable model p(y, z | c) = p(y | z, c) p(z | c), z ∈ R^L.

    * prior p(z | c): N(0, I) (``prior="standard"``) or a learned diagonal Gaussian N(μ_p(c), diag σ_p(c)²)
      (``"learned"``; unconditional models learn one μ_p, σ_p);
    * decoder p(y | z, c): a diagonal Gaussian N(μ(z, c), diag σ²) whose σ is a network output
      (``decoder_variance="heteroscedastic"``) or one learned scale per dimension of y (``"learned"``), or a
      Bernoulli with logits ℓ(z, c) for binary y (``likelihood="bernoulli"``); for maps on a torus
      (``decoder_noise="fourier"``, the default for Gaussian maps), a stationary Gaussian N(μ(z, c), Σ(c))
      whose covariance is diagonal in the orthonormal 2-D Fourier basis, Σ(c) = F* diag P(|k| | c) F, with the
      conditional power spectrum P (one value per channel and radius |k|) the output of a small network of c
      (:class:`~.fourier.StationaryNormal`);
    * encoder q(z | y, c) = N(m(y, c), diag s(y, c)²), reparameterised z = m + s ⊙ ε, ε ~ N(0, I)
      (Kingma & Welling 2014, "Auto-Encoding Variational Bayes", arXiv:1312.6114; Sohn et al. 2015 for the
      conditional form).

    Vectors y ``[n, d]`` use residual MLPs; maps ``[n, H, W]`` or ``[n, C, H, W]`` a convolutional encoder and
    decoder (:class:`~simgen.nets.ConvEncoder`, :class:`~simgen.nets.ConvDecoder`). The context c (embedded by
    the estimator) enters every block of both networks and the prior.

    **Training** maximises the evidence lower bound (``loss`` = −mean ELBO), with the KL term in closed form:

        ELBO(y, c) = E_q[log p(y | z, c)] − KL(q(z | y, c) ‖ p(z | c)) ≤ log p(y | c).

    With ``kl_warmup_epochs`` = W > 0 the KL term is weighted by β = min(1, (epoch + 1) / W) in the training
    loss (Bowman et al. 2016; Sønderby et al. 2016), driven by the shared trainer's ``on_epoch`` hook. The
    validation loss — what early stopping compares — is always the full −ELBO (β = 1). Keep W well below the
    trainer's ``patience``: while β < 1 the latent is used freely and the validation −ELBO can worsen for a few
    epochs, so a long warm-up lets early stopping end training before β reaches 1 (on ``gaussian_linear``,
    W = 20 with patience 10 stops at epoch 14 with a 1-nat likelihood gap; W = 0 and W = 5 both reach 0.05).

    **Decoder noise on maps.** A diagonal decoder's draws are its smooth mean plus white noise: whatever
    small-scale correlation the field has beyond what the code z carries is lost, and the emulated power
    spectrum falls towards the white-noise level at high |k|. The Fourier decoder keeps the residual's
    correlations: its log-density is exact and costs two FFTs, and a stationary Gaussian field (such as a
    Gaussian convergence map with shape noise) is in the model family exactly, with μ constant and
    P(|k| | c) its spectrum. The decoder's mean then carries what the residual spectrum cannot: non-stationary or
    non-Gaussian structure. ``decoder_variance`` does not apply to it.

    **Likelihood.** ``log_prob`` is the importance-weighted estimate (IWAE; Burda et al. 2016,
    arXiv:1509.00519) with K = ``iwae_samples`` draws z_k ~ q(z | y, c):

        log p̂_K(y | c) = log (1/K) Σ_k p(y | z_k, c) p(z_k | c) / q(z_k | y, c),

    computed as one batched logsumexp over the K draws. It is a *lower-biased* estimate: E[log p̂_K] ≤ log p(y|c)
    (Jensen), the bias is non-negative and shrinks monotonically in K, ELBO = E[log p̂_1] ≤ E[log p̂_K], and it is
    O(Var[w]/K) once the weights are well behaved — it vanishes only when q equals the true posterior p(z | y, c).
    Likelihoods, posteriors by MCMC and held-out scores built on it inherit this (small, K-dependent) bias.

    **Determinism.** Given ``generator``, the K standard-normal draws ε_1..K ∈ R^L are taken once per call and
    shared by all rows (common random numbers), so each row's estimate is a deterministic function of that row
    (y, c) and the generator's seed alone — not of the other rows in the batch, their number or the chunking.
    An MCMC chain re-seeds one frozen generator at every evaluation (:class:`~simgen.mcmc.MCMCPosterior`) and
    therefore targets a fixed, smooth function of θ, not a noisy one; the price is the IWAE bias above, fixed
    for the whole chain. Without a generator every row gets independent draws from torch's global RNG.

    Args:
        latent_features: L (default: min(d, 16) for vectors, 32 for maps, d the size of y).
        hidden_features: width of the MLPs (vectors) and of the prior network.
        num_blocks: residual blocks of the MLPs (vectors) or per resolution level (maps).
        channels: channels of the convolutional levels, finest first (maps only).
        prior: ``"learned"`` conditional Gaussian prior p(z | c) or ``"standard"`` N(0, I).
        decoder_variance: ``"heteroscedastic"`` (σ(z, c) from the decoder, the default) or ``"learned"`` (one
            σ per dimension) for the diagonal Gaussian decoder; giving it selects the diagonal decoder.
        decoder_noise: ``"diagonal"`` (independent elements, σ as ``decoder_variance`` says) or ``"fourier"``
            (maps only: a stationary Gaussian with the conditional power spectrum P(|k| | c)). By default
            (``None``) the Fourier decoder for Gaussian maps unless ``decoder_variance`` is given, else the
            diagonal one. A model saved before this option existed names its ``decoder_variance`` and so loads
            with the diagonal decoder it was trained with.
        likelihood: ``"gaussian"`` or ``"bernoulli"`` (y ∈ {0, 1}; estimators then leave y unstandardised).
        kl_warmup_epochs: epochs over which the KL weight rises linearly to 1 (0: no warm-up; keep it below
            the trainer's ``patience``).
        iwae_samples: K, importance samples of ``log_prob``.
        min_scale: floor of the decoder's and the encoder's standard deviations (standardised units).
    """

    family = "vae"
    log_prob_kind = "importance"

    def __init__(
        self,
        latent_features: int | None = None,
        hidden_features: int = 64,
        num_blocks: int = 2,
        channels: tuple[int, ...] | list[int] = (16, 32),
        prior: PriorKind = "learned",
        decoder_variance: DecoderVariance | None = None,
        likelihood: Likelihood = "gaussian",
        kl_warmup_epochs: int = 5,
        iwae_samples: int = 256,
        min_scale: float = 1e-3,
        decoder_noise: DecoderNoise | None = None,
    ) -> None:
        super().__init__()
        if prior not in ("learned", "standard"):
            raise ValueError(f"VAE prior must be 'learned' or 'standard'; got {prior!r}")
        if decoder_variance not in (None, "heteroscedastic", "learned"):
            raise ValueError(f"decoder_variance must be 'heteroscedastic' or 'learned'; got {decoder_variance!r}")
        if likelihood not in ("gaussian", "bernoulli"):
            raise ValueError(f"likelihood must be 'gaussian' or 'bernoulli'; got {likelihood!r}")
        if decoder_noise not in (None, "diagonal", "fourier"):
            raise ValueError(f"decoder_noise must be 'diagonal' or 'fourier'; got {decoder_noise!r}")
        if decoder_noise == "fourier" and likelihood != "gaussian":
            raise ValueError("decoder_noise='fourier' is a Gaussian decoder: it needs likelihood='gaussian'")
        if decoder_noise == "fourier" and decoder_variance is not None:
            raise ValueError("decoder_variance sets the diagonal decoder's σ; the Fourier decoder's is its power "
                             "spectrum: give one of decoder_variance and decoder_noise='fourier'")
        if latent_features is not None and latent_features < 1:
            raise ValueError(f"latent_features must be >= 1; got {latent_features}")
        if hidden_features < 1 or num_blocks < 1 or not channels or min(channels) < 1:
            raise ValueError("hidden_features, num_blocks and channels must be >= 1")
        if iwae_samples < 1 or kl_warmup_epochs < 0 or not 0 < min_scale < 1:
            raise ValueError(f"iwae_samples must be >= 1, kl_warmup_epochs >= 0 and 0 < min_scale < 1; got "
                             f"{iwae_samples}, {kl_warmup_epochs}, {min_scale}")
        self.latent_features = latent_features
        self.hidden_features = hidden_features
        self.num_blocks = num_blocks
        self.channels = tuple(int(c) for c in channels)
        self.prior = prior
        self.decoder_variance = decoder_variance
        self.likelihood = likelihood
        self.decoder_noise = decoder_noise
        self.kl_warmup_epochs = kl_warmup_epochs
        self.iwae_samples = iwae_samples
        self.min_scale = min_scale
        #: weight β of the KL term in the training loss (set by :meth:`on_epoch`)
        self.kl_weight = 1.0 if kl_warmup_epochs == 0 else 1.0 / kl_warmup_epochs
        self.encoder: nn.Module | None = None
        self.decoder: nn.Module | None = None
        self.prior_net: nn.Module | None = None
        self.spectrum_net: nn.Module | None = None
        self._spectrum_pending = False  # whether the Fourier decoder's spectrum awaits its data-dependent start

    def config(self) -> dict[str, Any]:
        return dict(
            latent_features=self.latent_features,
            hidden_features=self.hidden_features,
            num_blocks=self.num_blocks,
            channels=list(self.channels),
            prior=self.prior,
            decoder_variance=self.decoder_variance,
            likelihood=self.likelihood,
            kl_warmup_epochs=self.kl_warmup_epochs,
            iwae_samples=self.iwae_samples,
            min_scale=self.min_scale,
            decoder_noise=self.decoder_noise,
        )

    @property
    def standardize_y(self) -> bool:
        """Whether an estimator should standardise y: not for binary data (a Bernoulli decoder models 0/1)."""
        return self.likelihood != "bernoulli"

    # ----------------------------------------------------------------- networks
    @property
    def is_map(self) -> bool:
        return self.y_shape is not None and len(self.y_shape) in (2, 3)

    @property
    def latent(self) -> int:
        """L, the latent size once built."""
        if self.latent_features is not None:
            return self.latent_features
        return 32 if self.is_map else min(math.prod(self.y_shape), 16)

    def _build(self) -> None:
        if len(self.y_shape) not in (1, 2, 3):
            raise ValueError(f"VAE models vectors [n, d] and maps [n, H, W] / [n, C, H, W]; got y_shape {self.y_shape}")
        L, f = self.latent, self.context_features
        # the defaults, resolved for this y (and then written by config(), so a saved model names its decoder)
        if self.decoder_noise is None:
            stationary = self.is_map and self.likelihood == "gaussian" and self.decoder_variance is None
            self.decoder_noise = "fourier" if stationary else "diagonal"
        if self.decoder_noise == "diagonal" and self.decoder_variance is None:
            self.decoder_variance = "heteroscedastic"
        fourier = self.decoder_noise == "fourier"
        if fourier and not self.is_map:
            raise ValueError(f"decoder_noise='fourier' models maps [n, H, W] / [n, C, H, W]; got y_shape "
                             f"{self.y_shape}")
        # Two decoder outputs per element (mean, log-scale) for a heteroscedastic diagonal Gaussian, else one.
        k = 2 if (self.likelihood == "gaussian" and self.decoder_variance == "heteroscedastic"
                  and not fourier) else 1
        if self.is_map:
            c = 1 if len(self.y_shape) == 2 else self.y_shape[0]
            self.encoder = ConvEncoder(self.y_shape, 2 * L, self.channels, self.num_blocks, f)
            self.decoder = ConvDecoder(L, self.y_shape, k * c, tuple(reversed(self.channels)), self.num_blocks, f)
        else:
            d = self.y_shape[0]
            self.encoder = ResidualMLP(d, 2 * L, self.hidden_features, self.num_blocks, f, activation="gelu")
            self.decoder = ResidualMLP(L, k * d, self.hidden_features, self.num_blocks, f, activation="gelu")
        if self.likelihood == "gaussian" and self.decoder_variance == "learned" and not fourier:
            self.decoder_log_scale = nn.Parameter(torch.zeros(self.y_shape))
        if fourier:
            modes = radial_modes(*self.y_shape[-2:])
            # derived from the shape alone: not saved, so the state dict holds only what was learned
            self.register_buffer("_mode_group", modes.group, persistent=False)
            self.register_buffer("_mode_weight", modes.weight, persistent=False)
            self.register_buffer("_mode_counts", modes.counts, persistent=False)
            out = self._channels * modes.num_radii
            if f:
                self.spectrum_net = ResidualMLP(f, out, self.hidden_features, 1, activation="gelu")
                nn.init.zeros_(self.spectrum_net.output.weight)  # start as white noise of unit variance
                nn.init.zeros_(self.spectrum_net.output.bias)
            else:
                self.spectrum_params = nn.Parameter(torch.zeros(out))
            # the spectrum starts at the first training batch's (see _init_spectrum); loaded weights are kept
            self._spectrum_pending = True
            self.register_load_state_dict_post_hook(_spectrum_loaded)
        if self.prior == "learned":
            if f:
                self.prior_net = ResidualMLP(f, 2 * L, self.hidden_features, 1, activation="gelu")
                nn.init.zeros_(self.prior_net.output.weight)  # start at N(0, I)
                nn.init.zeros_(self.prior_net.output.bias)
            else:
                self.prior_params = nn.Parameter(torch.zeros(2 * L))

    @property
    def _channels(self) -> int:
        return 1 if len(self.y_shape) == 2 else self.y_shape[0]

    def _modes(self) -> RadialModes:
        return RadialModes(self._mode_group, self._mode_weight, self._mode_counts, tuple(self.y_shape[-2:]))

    def _spectrum_scale(self, c: Tensor | None, n: int) -> Tensor:
        """√P(|k| | c): the Fourier decoder's standard deviation per channel and radius, ``[n, C, R]``."""
        raw = self.spectrum_net(c) if self.spectrum_net is not None else self.spectrum_params.expand(n, -1)
        return self._scale(raw).reshape(n, self._channels, -1)

    @torch.no_grad()
    def _init_spectrum(self, y: Tensor) -> None:
        """Data-dependent start of the Fourier decoder (as Glow's ActNorm; Kingma & Dhariwal 2018,
        arXiv:1807.03039): P(|k|) ← the batch's power spectrum about its mean map, for every context.

        The spectrum's network of c starts with zero last-layer weights, so all contexts share this start; it
        saves the optimiser the many small steps from white noise to a steep spectrum.
        """
        self._spectrum_pending = False
        n, ch = y.shape[0], self._channels
        if n < 2:
            return
        r = y.reshape(n, ch, *self.y_shape[-2:])
        per_radius = radial_power(r - r.mean(0), self._modes()) * n / (n - 1)  # E|r̂_k|² = P(|k|)
        sigma = per_radius.sqrt().clamp_min(2 * self.min_scale)
        raw = (torch.log(torch.expm1(sigma - self.min_scale)) - math.log(math.expm1(1.0 - self.min_scale)))
        if self.spectrum_net is not None:
            self.spectrum_net.output.bias.copy_(raw.reshape(-1))
        else:
            self.spectrum_params.copy_(raw.reshape(-1))

    def on_epoch(self, epoch: int) -> None:
        """KL warm-up: β = min(1, (epoch + 1) / ``kl_warmup_epochs``) (called by the trainer)."""
        w = self.kl_warmup_epochs
        self.kl_weight = 1.0 if w == 0 else min(1.0, (epoch + 1) / w)

    def _scale(self, raw: Tensor) -> Tensor:
        """A standard deviation ≥ ``min_scale`` from an unconstrained output (1 at ``raw = 0``)."""
        floor = self.min_scale
        return floor + F.softplus(raw + math.log(math.expm1(1.0 - floor)))

    def _encoder_params(self, y: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor]:
        loc, raw = self.encoder(y, c).chunk(2, dim=-1)
        return loc, self._scale(raw)

    def _prior_params(self, c: Tensor | None, n: int, like: Tensor) -> tuple[Tensor, Tensor]:
        L = self.latent
        if self.prior == "standard":
            zeros = like.new_zeros(n, L)
            return zeros, zeros + 1.0
        raw = self.prior_net(c) if c is not None and self.prior_net is not None else self.prior_params.expand(n, -1)
        loc, raw_scale = raw.chunk(2, dim=-1)
        return loc, self._scale(raw_scale)

    def _decoder_params(self, z: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Mean (or logits) ``[n, *y_shape]`` and σ: ``[n, *y_shape]`` per element for a diagonal Gaussian,
        ``[n, C, R]`` per channel and radius |k| for the Fourier decoder, ``None`` for Bernoulli."""
        out = self.decoder(z, c)
        n, shape = z.shape[0], self.y_shape
        if self.decoder_noise == "fourier":
            return out.reshape(n, *shape), self._spectrum_scale(c, n)
        if self.likelihood == "bernoulli":
            return out.reshape(n, *shape), None
        if self.decoder_variance == "learned":
            return out.reshape(n, *shape), self._scale(self.decoder_log_scale).expand(n, *shape)
        if self.is_map:  # [n, 2C, H, W]: means in the first C channels
            loc, raw = out.reshape(n, 2, -1, *shape[-2:]).unbind(1)
        else:
            loc, raw = out.chunk(2, dim=-1)
        return loc.reshape(n, *shape), self._scale(raw).reshape(n, *shape)

    def _log_likelihood(self, y: Tensor, z: Tensor, c: Tensor | None) -> Tensor:
        """log p(y | z, c) ``[n]``."""
        loc, scale = self._decoder_params(z, c)
        if self.decoder_noise == "fourier":
            return self._fourier(loc, scale).log_prob(y)
        if scale is None:
            logp = -F.binary_cross_entropy_with_logits(loc, y, reduction="none")
        else:
            logp = -0.5 * ((y - loc) / scale) ** 2 - scale.log() - 0.5 * LOG_2PI
        return logp.reshape(y.shape[0], -1).sum(-1)

    def _fourier(self, loc: Tensor, scale: Tensor) -> Distribution:
        """The Fourier decoder's p(y | z, c) from means ``[n, *y_shape]`` and σ ``[n, C, R]``: batch ``[n]``,
        event ``y_shape``."""
        maps = len(self.y_shape) == 2
        return StationaryNormal(loc, scale[:, 0] if maps else scale, self._modes(), channels=not maps)

    # ----------------------------------------------------------------- public distributions
    def encode(self, y: Tensor, c: Tensor | None) -> Distribution:
        """q(z | y, c): a diagonal Gaussian with batch ``[n]`` and event ``[L]`` (``.mean``, ``.sample()``)."""
        self._check_built()
        loc, scale = self._encoder_params(y, c)
        return Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False)

    def decode(self, z: Tensor, c: Tensor | None) -> Distribution:
        """p(y | z, c) for codes z ``[n, L]``: batch ``[n]``, event ``y_shape`` (``.mean`` = decoder means)."""
        self._check_built()
        loc, scale = self._decoder_params(z, c)
        if self.decoder_noise == "fourier":
            return self._fourier(loc, scale)
        base = (Bernoulli(logits=loc, validate_args=False) if scale is None
                else Normal(loc, scale, validate_args=False))
        return Independent(base, len(self.y_shape), validate_args=False)

    def prior_distribution(self, c: Tensor | None, n: int = 1) -> Distribution:
        """p(z | c): batch ``[m]`` (the rows of c, else ``n``), event ``[L]``."""
        self._check_built()
        like = next(self.parameters())
        rows = n if c is None else c.shape[0]
        loc, scale = self._prior_params(c, rows, like)
        return Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False)

    # ----------------------------------------------------------------- objectives
    def elbo(self, y: Tensor, c: Tensor | None, *, num_samples: int = 1,
             generator: torch.Generator | None = None) -> Tensor:
        """ELBO per row ``[n]``: the reconstruction term averaged over ``num_samples`` reparameterised draws,
        minus the analytic KL(q(z | y, c) ‖ p(z | c))."""
        self._check_built()
        self._check_rows(y, c)
        return self._elbo(y, c, num_samples, generator, kl_weight=1.0)

    def _elbo(self, y: Tensor, c: Tensor | None, num_samples: int, generator: torch.Generator | None,
              kl_weight: float) -> Tensor:
        n = y.shape[0]
        q_loc, q_scale = self._encoder_params(y, c)
        p_loc, p_scale = self._prior_params(c, n, q_loc)
        eps = randn(num_samples, *q_loc.shape, generator=generator, device=q_loc.device, dtype=q_loc.dtype)
        z = (q_loc + q_scale * eps).reshape(num_samples * n, -1)
        rec = self._log_likelihood(_tile(y, num_samples), z, _tile(c, num_samples)).reshape(num_samples, n).mean(0)
        kl = (p_scale.log() - q_scale.log() + (q_scale**2 + (q_loc - p_loc) ** 2) / (2 * p_scale**2) - 0.5).sum(-1)
        return rec - kl_weight * kl

    def loss(self, y: Tensor, c: Tensor | None) -> Tensor:
        self._check_built()
        if self.training and self._spectrum_pending:
            self._init_spectrum(y)
        # β < 1 only while training: validation (early stopping) always scores the true −ELBO.
        return -self._elbo(y, c, 1, None, self.kl_weight if self.training else 1.0).mean()

    def log_prob(self, y: Tensor, c: Tensor | None, *, generator: torch.Generator | None = None,
                 num_samples: int | None = None) -> Tensor:
        """IWAE estimate of log p(y[i] | c[i]) with K = ``num_samples`` (default ``iwae_samples``) draws: ``[n]``.

        See the class docstring for its bias and for the determinism given ``generator``. Rows are processed
        in chunks so that K × rows decoder evaluations fit in memory.
        """
        self._check_built()
        self._check_rows(y, c)
        K = int(num_samples or self.iwae_samples)
        if K < 1:
            raise ValueError(f"num_samples must be >= 1; got {K}")
        n, L = y.shape[0], self.latent
        like = next(self.parameters())
        shared = None
        if generator is not None:
            shared = randn(K, 1, L, generator=generator, device=like.device, dtype=like.dtype)
        # rows per chunk: K × rows decoder evaluations, their activations (size × width) kept to ~2²⁴ numbers
        width = max(self.channels) if self.is_map else self.hidden_features
        rows = max(1, min(2**16, 2**24 // (math.prod(self.y_shape) * width)) // K)
        out = []
        for s in range(0, n, rows):
            yb, cb = y[s : s + rows], None if c is None else c[s : s + rows]
            b = yb.shape[0]
            q_loc, q_scale = self._encoder_params(yb, cb)
            p_loc, p_scale = self._prior_params(cb, b, q_loc)
            eps = shared.expand(K, b, L) if shared is not None else torch.randn(K, b, L, device=like.device,
                                                                                 dtype=like.dtype)
            z = q_loc + q_scale * eps  # [K, b, L]
            log_q = (-0.5 * eps**2 - q_scale.log() - 0.5 * LOG_2PI).sum(-1)
            log_pz = (-0.5 * ((z - p_loc) / p_scale) ** 2 - p_scale.log() - 0.5 * LOG_2PI).sum(-1)
            log_py = self._log_likelihood(_tile(yb, K), z.reshape(K * b, L), _tile(cb, K)).reshape(K, b)
            out.append(torch.logsumexp(log_py + log_pz - log_q, dim=0) - math.log(K))
        return torch.cat(out) if out else y.new_zeros(0)

    def _sample(self, rows: int, context: Tensor | None, *, generator: torch.Generator | None = None,
                mean: bool = False) -> Tensor:
        """z ~ p(z | c), then y ~ p(y | z, c) for each of ``rows`` context rows (with ``mean=True``, the decoder
        mean E[y | z, c]): ``[rows, *y_shape]``; ``sample(n, c, mean=True)`` passes the option."""
        like = next(self.parameters())
        p_loc, p_scale = self._prior_params(context, rows, like)
        eps = randn(p_loc.shape, generator=generator, device=like.device, dtype=like.dtype)
        loc, scale = self._decoder_params(p_loc + p_scale * eps, context)
        if self.decoder_noise == "fourier":
            y = loc if mean else self._fourier(loc, scale).rsample(generator=generator)
        elif scale is None:
            probs = torch.sigmoid(loc)
            y = probs if mean else bernoulli(probs, generator=generator)
        else:
            y = loc if mean else loc + scale * randn(loc.shape, generator=generator, device=like.device,
                                                     dtype=like.dtype)
        return y.reshape(rows, *self.y_shape)

    def _check_rows(self, y: Tensor, c: Tensor | None) -> None:
        if tuple(y.shape[1:]) != self.y_shape:
            raise ValueError(f"y must have shape [n, {', '.join(map(str, self.y_shape))}]; got {list(y.shape)}")
        self.check_context(c, rows=y.shape[0])


def _spectrum_loaded(module: nn.Module, incompatible_keys: Any) -> None:
    """A VAE whose weights are loaded keeps its learned spectrum (no data-dependent start)."""
    module._spectrum_pending = False


def _tile(t: Tensor | None, k: int) -> Tensor | None:
    """``[n, ...]`` → ``[k * n, ...]``, repeating the whole batch k times (row k·n + i is row i)."""
    if t is None or k == 1:
        return t
    return t.repeat(k, *([1] * (t.dim() - 1)))
