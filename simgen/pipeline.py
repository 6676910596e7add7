r"""The steps of ``simgen run``: simulate, fit, infer, check, report.

:func:`run` chains them for a validated :class:`~simgen.config.RunConfig`; each step is a function of its
inputs, usable alone (``simgen train``, ``simgen evaluate`` and the tutorials call them):

1. :func:`simulate_training_set` — θ ~ p(θ), x ~ p(x | θ) into a resumable store (seed ``seed``);
2. :func:`make_observations` — the observations to infer θ from: held-out simulations (seed ``seed + 1``),
   simulations at given θ, or a file;
3. :func:`fit_posterior`, :func:`fit_likelihood`, :func:`fit_ratio`, :func:`fit_joint` — the models asked for;
4. :func:`check_observations` — posterior draws per observation (by MCMC for an emulator or a ratio), C2ST
   against the simulator's reference posterior where it has one, corner plots with both;
5. :func:`check_calibration` — expected coverage and SBC ranks on held-out simulations (seed ``seed + 2``);
6. :func:`check_likelihood` — the likelihood's emulated against simulated data at the observations' θ;
7. :func:`write_report` — ``summary.json`` and one HTML report with every figure.

The default posterior embedding for ``cosmology_maps`` is :class:`~simgen.nets.PowerSpectrumEmbedding`: for a stationary
isotropic Gaussian field the sums of |K[m]|² over shells of equal |m| are sufficient statistics, cheap to compute
and easy to learn from.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from . import nets
from .config import ConfigError, RunConfig
from .estimators.auto import AUTO, emulated_for
from .estimators.base import infer_x_kind
from .estimators.importance import held_out_rows
from .mcmc import MCMCPosterior
from .training import TrainingConfig
from .utils import call_simulator

__all__ = [
    "Observations",
    "RunResult",
    "check_calibration",
    "check_emulator",
    "check_likelihood",
    "check_observations",
    "estimate_seconds",
    "fit_emulator",
    "fit_likelihood",
    "fit_posterior",
    "fit_ratio",
    "fit_joint",
    "JointPosterior",
    "load_observations",
    "make_embedding",
    "make_observations",
    "mcmc_options",
    "run",
    "simulate_at",
    "simulate_training_set",
    "summary_facts",
    "write_report",
]

Say = Callable[[str], None]


def _silent(_: str) -> None:
    return None


# ------------------------------------------------------------------------------------------------ embedding


def make_embedding(kind: str, x: Tensor, x_kind: str | None, key: str = "posterior.embedding",
                   seed: int | None = None) -> nn.Module | None:
    """The posterior's embedding of x ``[n, *x_shape]`` named by the configuration: ``"auto"`` (``None``: the
    estimator's default for ``x_kind``), ``"flatten"`` or ``"power_spectrum"`` (calibrated on ``x`` standardised
    as the estimator will); ``key`` names the configuration key in errors. Its network is initialised from
    ``seed`` (the run's), without touching the caller's random state: an estimator takes a given embedding as it
    is, so a seeded fit repeats only if the embedding does."""
    x_shape = tuple(x.shape[1:])
    if kind == "auto":
        return None
    if kind == "flatten":
        return nets.Flatten(x_shape)
    if kind == "power_spectrum":
        from .transforms import Standardize

        if x_kind not in (None, "map") or len(x_shape) not in (2, 3) or x_shape[-1] != x_shape[-2]:
            raise ConfigError(key, f"'power_spectrum' needs square maps; x has shape {x_shape} "
                              f"(x_kind {x_kind!r}); allowed here: 'auto', 'flatten'")
        std = Standardize(x_shape, per_channel=True).fit(x)
        with torch.no_grad(), torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(int(seed))
            return nets.PowerSpectrumEmbedding(x_shape).calibrate(std(x))
    raise ConfigError(key, f"must be one of 'auto', 'flatten', 'power_spectrum'; got {kind!r}")


# ----------------------------------------------------------------------------------------------- simulation


def simulate_at(simulator: Any, theta: Tensor, seed: int) -> Tensor:
    """One simulation at each row of θ ``[m, d_theta]`` → ``[m, *x_shape]``, seeded by ``seed`` (see
    :func:`simgen.utils.call_simulator`)."""
    theta = torch.as_tensor(theta, dtype=torch.float32)
    x = call_simulator(simulator, theta, seed)
    if x.shape[0] != theta.shape[0]:
        raise ValueError(f"the simulator returned {x.shape[0]} rows for {theta.shape[0]} parameter rows")
    return x


def simulate_training_set(config: RunConfig, simulator: Any, *, progress: bool = True,
                          say: Say = _silent) -> tuple[Tensor, Tensor]:
    """θ ~ p(θ), x ~ p(x | θ): ``config.num_simulations`` attempts into the store ``out/<store>`` (resumed or
    extended when it exists), seed ``config.seed``. Returns the valid rows ``[n, d_theta]``, ``[n, *x_shape]``."""
    import simgen

    store = config.out / config.store
    executor = config.executor or None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # failures are summarised below
        s = simgen.simulate(simulator, simulator.prior, config.num_simulations, seed=config.seed,
                            chunk_size=min(config.chunk_size, config.num_simulations), progress=progress,
                            store=store, return_data=False, workers=config.workers or None, executor=executor,
                            metadata={"simulator_options": {"name": config.simulator, **config.simulator_options}},
                            gold=config.gold, gold_reference=config.gold_reference)
    theta, x = s.load()
    failed = len(s) - theta.shape[0]
    say(f"  {theta.shape[0]} valid simulations in {store}" + (f" ({failed} failed, kept in the store)" if failed
                                                              else ""))
    if theta.shape[0] < 10:
        raise RuntimeError(f"only {theta.shape[0]} of {len(s)} simulations are valid; see the store's failures")
    return theta, x


def training_gold(config: RunConfig) -> dict[str, Tensor] | None:
    """The gold of the training set's valid rows (``[simulation] gold = true``), row for row with
    :func:`simulate_training_set`'s; ``None`` without gold."""
    if not config.gold:
        return None
    import simgen

    return simgen.open_store(config.out / config.store).load_gold()


def training_gold_reference(config: RunConfig) -> Tensor | None:
    """The θ_ref rows ``[k, d_theta]`` the training set's joint log ratio was mined at, as the store records them
    (``[simulation] gold_reference``); ``None`` without them."""
    if not config.gold:
        return None
    import simgen

    reference = (simgen.open_store(config.out / config.store).metadata.get("gold") or {}).get("reference")
    return torch.tensor(reference, dtype=torch.float64) if reference is not None else None


def _gold_rows(gold: dict[str, Tensor] | None, spec: Any) -> dict[str, Tensor] | None:
    """The first ``spec.num_train`` rows of ``gold`` for a model with ``gold`` set (else ``None``)."""
    if spec.gold is None:
        return None
    if gold is None:
        raise ValueError(f"a model with gold = {spec.gold!r} trains on the simulations' gold: set [simulation] "
                         "gold = true")
    return {name: values[: spec.num_train] for name, values in gold.items()}


@dataclass
class Observations:
    """Observations to infer θ from: ``x`` ``[m, *x_shape]``, their true θ ``[m, d_theta]`` when known."""

    x: Tensor
    theta: Tensor | None
    source: str


def load_observations(path: Path, x_shape: tuple[int, ...] | None) -> Tensor:
    """Observed data from ``.npy``, ``.pt`` (a tensor, loaded with ``weights_only=True``) or ``.json`` (a nested
    list or ``{"x": ...}``): ``[m, *x_shape]`` (a single ``[*x_shape]`` becomes one row).

    Raises:
        ConfigError: unreadable, non-finite or of the wrong shape (key ``observations.file``).
    """
    try:
        if path.suffix == ".npy":
            data = torch.from_numpy(np.load(path, allow_pickle=False))
        elif path.suffix == ".pt":
            data = torch.load(path, map_location="cpu", weights_only=True)
        else:
            data = json.loads(path.read_text())
            data = data["x"] if isinstance(data, dict) else data
        x = torch.as_tensor(data, dtype=torch.float32)
    except Exception as e:  # noqa: BLE001 - any unreadable file is a configuration error, quoted
        raise ConfigError("observations.file", f"cannot read {path}: {type(e).__name__}: {e}") from None
    if x_shape is not None:
        if tuple(x.shape) == tuple(x_shape):
            x = x[None]
        if tuple(x.shape[1:]) != tuple(x_shape):
            raise ConfigError("observations.file", f"{path} holds an array of shape {list(x.shape)}; expected "
                              f"[m, {', '.join(map(str, x_shape))}] (the simulator's x_shape {list(x_shape)})")
    if x.dim() < 2 or not torch.isfinite(x).all():
        raise ConfigError("observations.file", f"{path} must hold finite rows [m, *x_shape]; got shape "
                          f"{list(x.shape)}")
    return x


def make_observations(config: RunConfig, simulator: Any, x_shape: tuple[int, ...] | None) -> Observations:
    """The observations of ``[observations]``: ``held_out`` fresh simulations (seed ``seed + 1``), simulations
    at the given ``theta`` (seed ``seed + 1``), or the rows of ``file``."""
    if config.obs_file is not None:
        x = load_observations(config.path(config.obs_file), x_shape)
        theta = None
        if config.true_theta is not None:
            theta = torch.tensor(config.true_theta, dtype=torch.float32)
            if theta.shape[0] != x.shape[0]:
                raise ConfigError("observations.true_theta", f"has {theta.shape[0]} rows; the file has "
                                  f"{x.shape[0]} observations")
        return Observations(x, theta, f"file {config.obs_file}")
    if config.theta_obs is not None:
        theta = torch.tensor(config.theta_obs, dtype=torch.float32)
        source = "simulated at the configured θ"
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed + 1)
            theta = simulator.prior.sample((config.held_out,)).float()
        source = "held-out simulations"
    x = simulate_at(simulator, theta, config.seed + 1)
    ok = torch.isfinite(x.reshape(x.shape[0], -1)).all(1)
    if not ok.all():
        raise RuntimeError(f"the simulation of observation(s) {torch.nonzero(~ok).flatten().tolist()} failed "
                           "(non-finite output)")
    return Observations(x, theta, source)


# ------------------------------------------------------------------------------------------------- fitting


def _device(config: RunConfig) -> str | None:
    return None if config.device == "auto" else config.device


def fit_posterior(config: RunConfig, simulator: Any, theta: Tensor, x: Tensor, *, progress: bool = True,
                  say: Say = _silent, checkpoint: Any = None, gold: dict[str, Tensor] | None = None,
                  emulator: Any = None, validation_index: Tensor | None = None) -> Any:
    """A :class:`~simgen.PosteriorEstimator` of ``[posterior]`` fitted on (θ, x), seed ``config.seed`` (training
    checkpointed to ``checkpoint`` when given), and on ``[posterior] num_emulated`` pairs drawn from
    ``emulator`` (or, without one, from an emulator the posterior fits on the same pairs) when that is set;
    ``validation_index``: the rows held out, which ``emulator`` held out too (:func:`shared_held_out`)."""
    import simgen

    spec = config.posterior
    theta, x = theta[: spec.num_train], x[: spec.num_train]
    embedding = make_embedding(spec.embedding, x, getattr(simulator, "x_kind", None), seed=config.seed)
    post = simgen.PosteriorEstimator(simulator.prior, model_of(spec, "vector"), embedding=embedding,
                                     simulator=simulator, device=_device(config), gold=spec.gold,
                                     gold_weight=spec.gold_weight, sample_with=spec.sample_with)
    augment: dict[str, Any] = {}
    if spec.num_emulated is not None or emulator is not None:
        augment = {"emulator": emulator if spec.num_emulated != 0 else None, "num_emulated": spec.num_emulated}
    if validation_index is not None:
        augment["validation_index"] = validation_index
    history = post.fit(theta, x, seed=config.seed, progress=progress, checkpoint=checkpoint,
                       gold=_gold_rows(gold, spec), **augment, **spec.training)
    emulated = f" and {post.num_emulated} emulated pairs" if post.num_emulated else ""
    if post.emulator is not None and post.emulator is not emulator:  # fitted by the posterior for its pairs
        emulated += (f" from an emulator it fitted first ({post.emulator.history.epochs} epochs in "
                     f"{post.emulator.history.wall_time:.0f} s)")
    say(f"  posterior ({_chosen(post, spec.model)}, embedding {spec.embedding}, {theta.shape[0]} simulations"
        f"{emulated}): "
        f"{history.epochs} epochs in {history.wall_time:.0f} s, best validation loss "
        f"{history.best_validation_loss:.3f}")
    if post.emulator is not None:
        say(f"  posterior samples {sampled_with(post)}")
    return post


def sampled_with(post: Any) -> str:
    """How a fitted posterior samples, in words: by its family, or by importance sampling of its emulator's
    posterior, with the held-out comparison behind the choice."""
    how = ("by importance sampling of its emulator's posterior" if post.sample_with == "importance" else
           "directly from its family")
    return how + (f" ({post.held_out})" if post.held_out is not None else "")


def shared_held_out(config: RunConfig, num_rows: int) -> Tensor | None:
    """The simulations the run's emulator and the posterior that draws its emulated pairs from it both hold out
    (:func:`~simgen.estimators.importance.held_out_rows`), so that ``sample_with = "auto"`` can compare the two
    posteriors on them: where both train on the same ``num_rows`` simulations, else ``None``."""
    post, like = config.posterior, config.likelihood
    if post.sample_with == "direct" or post.num_train != like.num_train:
        return None
    fraction = post.training.get("validation_fraction", TrainingConfig.validation_fraction)
    if like.training.get("validation_fraction", TrainingConfig.validation_fraction) != fraction:
        return None
    return held_out_rows(num_rows, fraction, config.seed)


def auto_emulated_from_run(config: RunConfig, simulator: Any, theta: Tensor, x: Tensor,
                           gold: dict[str, Tensor] | None) -> int:
    """The emulated pairs ``[posterior]``'s ``"auto"`` adds to its training data when ``num_emulated`` is unset
    and the run's ``[likelihood]`` is ``"auto"`` too, so that they come from the run's emulator
    (:meth:`~simgen.PosteriorEstimator.auto_emulated`); else 0."""
    import simgen

    post, like = config.posterior, config.likelihood
    if post.num_emulated is not None or not like.enabled or post.model != AUTO or like.model != AUTO:
        return 0
    estimator = simgen.PosteriorEstimator(simulator.prior, simulator=simulator, gold=post.gold)
    return estimator.auto_emulated(theta[: post.num_train], x[: post.num_train], gold=_gold_rows(gold, post))


def posterior_fits_emulator(config: RunConfig, simulator: Any, x_shape: tuple[int, ...]) -> bool:
    """Whether ``[posterior]`` fits an emulator of its own for emulated pairs (before the simulations, from
    x's shape ``x_shape``): ``num_emulated`` > 0 without ``[likelihood]``, or unset where ``"auto"`` adds them
    (:func:`~simgen.estimators.auto.emulated_for`) and they do not come from the run's emulator
    (:func:`auto_emulated_from_run`)."""
    post, like = config.posterior, config.likelihood
    if not post.enabled:
        return False
    if post.num_emulated is not None:
        return post.num_emulated > 0 and not like.enabled
    if post.model != AUTO or post.gold is not None or (like.enabled and like.model == AUTO):
        return False
    x_kind = getattr(simulator, "x_kind", None) or infer_x_kind(x_shape)
    rows = min(post.num_train or config.num_simulations, config.num_simulations)
    return emulated_for("posterior", x_kind=x_kind, num_rows=rows, x_features=math.prod(x_shape)) > 0


def posterior_may_sample_by_importance(config: RunConfig, simulator: Any, x_shape: tuple[int, ...]) -> bool:
    """Whether ``[posterior]`` may sample by importance (before the simulations, from x's shape ``x_shape``): it
    trains on emulated pairs (``num_emulated`` > 0, or unset where ``"auto"`` adds them) and ``sample_with`` is
    not ``"direct"``."""
    post = config.posterior
    if not post.enabled or post.sample_with == "direct":
        return False
    if post.num_emulated is not None:
        return post.num_emulated > 0
    if post.model != AUTO or post.gold is not None:
        return False
    x_kind = getattr(simulator, "x_kind", None) or infer_x_kind(x_shape)
    rows = min(post.num_train or config.num_simulations, config.num_simulations)
    return emulated_for("posterior", x_kind=x_kind, num_rows=rows, x_features=math.prod(x_shape)) > 0


def model_of(spec: Any, y_kind: str) -> Any:
    """What a ``[posterior]``/``[likelihood]`` table asks an estimator for: ``"auto"`` as it is (the estimator
    chooses when it sees the data), else the named family with its options, in the architecture that suits y of
    ``y_kind`` (``model = "flow"`` on maps is the map flow)."""
    from .models import make_model, model_for

    return spec.model if spec.model == AUTO else make_model(model_for(spec.model, y_kind), spec.options)


def _chosen(est: Any, model: str) -> str:
    """The family an estimator built, and why when ``model = "auto"`` chose it."""
    family = est.density.density.family
    return f"{family} (model = \"auto\": {est.choice.reason})" if model == AUTO and est.choice is not None else family


def fit_likelihood(config: RunConfig, simulator: Any, theta: Tensor, x: Tensor, *, progress: bool = True,
                   say: Say = _silent, checkpoint: Any = None, gold: dict[str, Tensor] | None = None,
                   validation_index: Tensor | None = None) -> Any:
    """A :class:`~simgen.LikelihoodEstimator` of ``[likelihood]`` fitted on (θ, x), seed ``config.seed`` (training
    checkpointed to ``checkpoint`` when given), the rows ``validation_index`` held out when given."""
    import simgen

    spec = config.likelihood
    theta, x = theta[: spec.num_train], x[: spec.num_train]
    # the model name stands for the family that suits x (model="flow" on maps is the map flow)
    kind = getattr(simulator, "x_kind", None) or infer_x_kind(tuple(x.shape[1:]))
    emu = simgen.LikelihoodEstimator(simulator.prior, model_of(spec, kind), simulator=simulator, device=_device(config),
                                     discrete_model=spec.discrete_model, gold=spec.gold, gold_weight=spec.gold_weight,
                                     log_theta=spec.log_theta)
    history = emu.fit(theta, x, seed=config.seed, progress=progress, checkpoint=checkpoint,
                      gold=_gold_rows(gold, spec), validation_index=validation_index, **spec.training)
    say(f"  emulator ({_chosen(emu, spec.model)}, {theta.shape[0]} simulations): {history.epochs} epochs in "
        f"{history.wall_time:.0f} s, best validation loss {history.best_validation_loss:.3f}")
    return emu


def fit_ratio(config: RunConfig, simulator: Any, theta: Tensor, x: Tensor, *, progress: bool = True,
              say: Say = _silent, checkpoint: Any = None, gold: dict[str, Tensor] | None = None,
              gold_reference: Tensor | None = None) -> Any:
    """A :class:`~simgen.RatioEstimator` of ``[ratio]`` fitted on (θ, x), seed ``config.seed`` (training
    checkpointed to ``checkpoint`` when given); ``gold_reference``: the θ_ref rows of ``gold``'s joint log
    ratio, for ``gold = "ratio"`` or ``"ratio+score"``."""
    import simgen

    spec = config.ratio
    theta, x = theta[: spec.num_train], x[: spec.num_train]
    embedding = make_embedding(spec.embedding, x, getattr(simulator, "x_kind", None), "ratio.embedding",
                               seed=config.seed)
    est = simgen.RatioEstimator(simulator.prior, spec.model, embedding=embedding, simulator=simulator,
                                device=_device(config), gold=spec.gold, gold_weight=spec.gold_weight, **spec.options)
    history = est.fit(theta, x, seed=config.seed, progress=progress, checkpoint=checkpoint,
                      gold=_gold_rows(gold, spec),
                      gold_reference=gold_reference if spec.gold in ("ratio", "ratio+score") else None,
                      **spec.training)
    say(f"  ratio ({est.variant}, embedding {spec.embedding}, {theta.shape[0]} simulations): {history.epochs} "
        f"epochs in {history.wall_time:.0f} s, best validation loss {history.best_validation_loss:.3f}")
    return est


def fit_joint(config: RunConfig, simulator: Any, theta: Tensor, x: Tensor, *, progress: bool = True,
              say: Say = _silent, checkpoint: Any = None) -> Any:
    """A :class:`~simgen.JointEstimator` of ``[joint]`` fitted on (θ, x) (vector x), seed ``config.seed``
    (training checkpointed to ``checkpoint`` when given)."""
    import simgen

    from .models import make_model

    spec = config.joint
    theta, x = theta[: spec.num_train], x[: spec.num_train]
    est = simgen.JointEstimator(simulator.prior, make_model(spec.model, spec.options), device=_device(config))
    history = est.fit(theta, x, seed=config.seed, progress=progress, checkpoint=checkpoint, **spec.training)
    say(f"  joint ({spec.model}, {theta.shape[0]} simulations): {history.epochs} epochs in "
        f"{history.wall_time:.0f} s, best validation loss {history.best_validation_loss:.3f}")
    return est


class JointPosterior:
    """A :class:`~simgen.JointEstimator`'s posterior p(θ | x) with the ``sample(n, x, generator=)`` of a posterior
    (what the observation checks call)."""

    def __init__(self, joint: Any) -> None:
        self.joint = joint

    def sample(self, n: int, x_obs: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        return self.joint.sample_posterior(n, x_obs, generator=generator)


# -------------------------------------------------------------------------------------------------- checks


@dataclass
class Outputs:
    """What a run shows: report sections in order, each a list of blocks (figures, tables, verdicts, text).

    Figures are written to ``folder`` as PNG when added and embedded in the report by :func:`write_report`.
    """

    folder: Path
    sections: dict[str, list[tuple[str, Any, str]]] = field(default_factory=dict)
    files: list[dict[str, str]] = field(default_factory=list)

    def _section(self, section: str) -> list[tuple[str, Any, str]]:
        return self.sections.setdefault(section, [])

    def figure(self, section: str, key: str, caption: str, figure: Any) -> Path:
        """Save ``figure`` as ``folder/<key>.png`` and queue it for the report."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{key}.png"
        figure.savefig(path, dpi=100, bbox_inches="tight")
        self._section(section).append(("figure", figure, caption))
        self.files.append({"section": section, "caption": caption, "path": str(path)})
        return path

    def table(self, section: str, rows: Any, caption: str = "") -> None:
        self._section(section).append(("table", rows, caption))

    def verdict(self, section: str, flagged: bool, text: str) -> None:
        self._section(section).append(("verdict", flagged, text))

    def text(self, section: str, text: str) -> None:
        self._section(section).append(("text", text, ""))

    def data(self, section: str, theta: Tensor, x: Tensor, names: list[str] | None, num_failed: int) -> None:
        self.sections.setdefault(section, []).append(("data", (theta, x, names, num_failed), ""))

    def training(self, section: str, histories: dict[str, Any]) -> None:
        self._section(section).append(("training", histories, ""))


def _reference(simulator: Any, x: Tensor, n: int, generator: torch.Generator) -> Tensor | None:
    """Reference posterior draws for one observation, or ``None`` when the simulator has none."""
    if not hasattr(simulator, "reference_posterior"):
        return None
    try:
        return torch.as_tensor(simulator.reference_posterior(x, n, generator=generator)).float()
    except NotImplementedError:
        return None


def mcmc_options(options: dict[str, Any], posterior: Any = None, *, base_dir: str | Path = ".",
                 device: str | torch.device | None = None, key: str = "evaluation.mcmc") -> dict[str, Any]:
    """MCMC ``options`` (a configuration's ``[evaluation] mcmc``, the CLI's ``--mcmc``) as
    :class:`~simgen.mcmc.MCMCPosterior` takes them: a ``proposal`` of ``"posterior"`` becomes ``posterior``, the
    run's fitted posterior estimator, and any other string the posterior estimator saved at that path (relative
    to ``base_dir``), loaded with :func:`simgen.load` on ``device``.

    Raises:
        ConfigError: ``"posterior"`` without a posterior estimator, no model file at the path, or a model there
            that is not a posterior estimator.
    """
    from .io import load

    options = dict(options)
    name = options.get("proposal")
    if not isinstance(name, str):
        return options
    where = f"{key}.proposal"
    if name == "posterior":
        if posterior is None:
            raise ConfigError(where, "\"posterior\" names the run's posterior estimator, and there is none here: "
                              "give the path of a saved posterior estimator")
        options["proposal"] = posterior
        return options
    path = Path(name).expanduser()
    path = path if path.is_absolute() else Path(base_dir) / path
    try:
        est = load(path, device=device)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(where, f"must be \"posterior\" or the path of a saved posterior estimator: {e}") from None
    if est.direction != "posterior":
        raise ConfigError(where, f"{path} holds a {est.direction} model; the proposal must be a posterior "
                          "estimator q(θ | x)")
    options["proposal"] = est
    return options


def check_observations(config: RunConfig, simulator: Any, observations: Observations, outputs: Outputs, *,
                       posterior: Any = None, emulator: Any = None, ratio: Any = None, progress: bool = True,
                       say: Say = _silent, joint: Any = None) -> list[dict[str, Any]]:
    """Posterior draws for each observation (from ``posterior``, by MCMC on ``emulator`` when
    ``[likelihood].mcmc``, by MCMC on ``ratio``, a ratio estimator, and from ``joint``, a joint estimator's
    posterior conditional, when given), their C2ST against the
    simulator's reference posterior where it has one, and a corner plot with both. Draws are saved to
    ``out/samples.pt``. Returns one result row per observation."""
    from . import diagnostics, plots

    names = list(getattr(simulator, "parameter_names", None) or []) or None
    generator = torch.Generator().manual_seed(config.seed + 3)
    rows, saved = [], {}
    methods: list[tuple[str, Any]] = []
    if posterior is not None:
        methods.append(("posterior", posterior))
    mcmc = (mcmc_options(config.mcmc, posterior, base_dir=config.base_dir, device=_device(config))
            if (emulator is not None and config.likelihood.mcmc) or ratio is not None else {})
    if emulator is not None and config.likelihood.mcmc:
        methods.append(("emulator_mcmc", emulator.posterior(num_chains=config.mcmc_chains,
                                                            warmup=config.mcmc_warmup, progress=progress,
                                                            **mcmc)))
    if ratio is not None:
        methods.append(("ratio_mcmc", ratio.posterior(num_chains=config.mcmc_chains, warmup=config.mcmc_warmup,
                                                      progress=progress, **mcmc)))
    if joint is not None:
        methods.append(("joint", JointPosterior(joint)))
    for i in range(observations.x.shape[0]):
        x_i = observations.x[i]
        truth = None if observations.theta is None else observations.theta[i]
        reference = _reference(simulator, x_i, config.reference_samples, generator) if config.c2st else None
        row: dict[str, Any] = {"observation": i}
        if truth is not None:
            row["theta_true"] = [round(float(v), 5) for v in truth]
        for label, method in methods:
            start = time.perf_counter()
            draws = method.sample(config.num_samples, x_i, generator=generator)
            row[f"{label}_seconds"] = round(time.perf_counter() - start, 2)
            if isinstance(method, MCMCPosterior):  # where the chains started, R̂ and ESS
                row[f"{label}_run"] = str(method.last_run)
            saved[f"{label}_{i}"] = draws
            row[f"{label}_mean"] = [round(float(v), 5) for v in draws.mean(0)]
            row[f"{label}_std"] = [round(float(v), 5) for v in draws.std(0)]
            if reference is not None:
                n = min(draws.shape[0], reference.shape[0])
                row[f"{label}_c2st"] = round(diagnostics.c2st(draws[:n], reference[:n], seed=config.seed + 1), 4)
            what = {"posterior": "posterior", "emulator_mcmc": "emulator + MCMC posterior",
                    "ratio_mcmc": "ratio + MCMC posterior", "joint": "joint model's posterior"}[label]
            caption = f"{what} draws" + (" (C0) against the reference posterior (C1)" if reference is not None
                                         else "") + (", true θ marked" if truth is not None else "")
            outputs.figure(f"Observation {i}", f"corner_{label}_{i}", caption,
                           plots.corner(draws, reference=reference, truth=truth, labels=names))
            if f"{label}_run" in row:
                outputs.text(f"Observation {i}", f"{what}, MCMC: {row[f'{label}_run']}")
        if reference is not None:
            saved[f"reference_{i}"] = reference
            row["reference_mean"] = [round(float(v), 5) for v in reference.mean(0)]
            row["reference_std"] = [round(float(v), 5) for v in reference.std(0)]
        scores = ", ".join(f"{label} C2ST {row[f'{label}_c2st']:.3f}" for label, _ in methods
                           if f"{label}_c2st" in row)
        say(f"  observation {i}: " + (scores or "no reference posterior to compare with"))
        d = int(simulator.prior.event_shape[0])
        outputs.table(f"Observation {i}", _parameter_table(row, names or [f"theta_{j + 1}" for j in range(d)]))
        if scores:
            outputs.text(f"Observation {i}", f"C2ST against the reference posterior: {scores} (0.5: "
                         "indistinguishable)")
        rows.append(row)
    torch.save(saved, config.out / "samples.pt")
    return rows


def check_calibration(config: RunConfig, simulator: Any, posterior: Any, outputs: Outputs, *,
                      say: Say = _silent) -> dict[str, Any]:
    """Expected coverage (HPD and TARP) and SBC ranks of ``posterior`` on ``config.calibration`` held-out
    simulations (θ ~ p(θ), seed ``seed + 2``), with their figures."""
    from . import diagnostics, plots

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed + 2)
        theta = simulator.prior.sample((config.calibration,)).float()
    x = simulate_at(simulator, theta, config.seed + 2)
    ok = torch.isfinite(x.reshape(x.shape[0], -1)).all(1)
    theta, x = theta[ok], x[ok]
    cov = diagnostics.coverage(posterior, theta, x, num_samples=config.calibration_samples, seed=config.seed)
    ranks = diagnostics.sbc(posterior, theta, x, num_samples=config.calibration_samples, seed=config.seed)
    names = list(getattr(simulator, "parameter_names", None) or []) or None
    section = "Calibration"
    outputs.text(section, f"{theta.shape[0]} held-out simulations, {config.calibration_samples} posterior draws "
                 "each.")
    outputs.verdict(section, cov.flagged, cov.summary())
    outputs.figure(section, "coverage", "expected coverage against credibility (below the diagonal: "
                   "over-confident)", plots.coverage(cov))
    outputs.verdict(section, ranks.flagged, ranks.summary())
    outputs.figure(section, "sbc_ranks", "SBC ranks (grey: the band under uniformity)",
                   plots.sbc_ranks(ranks, labels=names))
    say(f"  {cov.summary()}")
    say(f"  {ranks.summary()}")
    return {
        "num_simulations": int(theta.shape[0]),
        "coverage": {"levels": cov.levels.tolist(), "tarp": cov.tarp.tolist(),
                     "hpd": None if cov.hpd is None else cov.hpd.tolist(), "max_deviation": cov.max_deviation,
                     "flagged": cov.flagged, "summary": cov.summary()},
        "sbc": {"pvalues": ranks.pvalues.tolist(), "flagged": ranks.flagged, "summary": ranks.summary()},
    }


def check_likelihood(config: RunConfig, simulator: Any, emulator: Any, theta: Tensor, outputs: Outputs, *,
                     say: Say = _silent) -> dict[str, Any]:
    """The emulator against the simulator at θ rows ``[m, d_theta]``: ``config.emulator_maps`` draws of each,
    two-sample statistics and (for maps) power spectra on ``config.spectrum_maps`` draws, statistic histograms
    and galleries."""
    from . import diagnostics, plots

    # the likelihood gap needs the emulator's log_prob on every draw: an IWAE or ODE estimate per map is too
    # slow for a run's budget, so on maps it is computed where log_prob is an exact change of variables
    is_map = getattr(simulator, "x_kind", None) == "map" or len(getattr(emulator, "x_shape", ()) or ()) >= 2
    gap = None if not is_map or emulator.log_prob_kind == "exact" else False
    comparison = diagnostics.compare_likelihood(emulator, simulator, theta, num_samples=config.emulator_maps,
                                                spectrum_samples=config.spectrum_maps if is_map else None, gap=gap,
                                                seed=config.seed + 4)
    where = [", ".join(f"{v:.3g}" for v in row.tolist()) for row in comparison.theta]
    section = "Emulator vs simulator"
    outputs.verdict(section, comparison.flagged, comparison.summary())
    outputs.table(section, comparison.table(), "per θ: C2ST on summary statistics (maps) or x, MMD², "
                  "Wasserstein distance in simulated standard deviations, the exact-likelihood gap "
                  "E[log p − log q] on fresh simulations (nats, its standard error, nats per pixel or dimension) "
                  "where computable; for maps the power spectrum bin farthest from the simulator's, the largest "
                  "difference in the correlation of log C_ℓ across maps (both from "
                  f"{max(config.emulator_maps, config.spectrum_maps)} maps of each per θ), and the z-score of the "
                  "exact log-likelihood of emulated against simulated maps")
    result: dict[str, Any] = {}
    if comparison.simulated_log_likelihood is not None:
        # typicality under the true model: emulated draws should score like simulated ones under log p(x | θ)
        rows = []
        z = comparison.typicality_z
        for i, label in enumerate(where):
            ll_sim, ll_emu = comparison.simulated_log_likelihood[i], comparison.emulated_log_likelihood[i]
            ll_emu = ll_emu[ll_emu.isfinite()]
            rows.append({"theta": label, "log p(x|θ), simulated": f"{ll_sim.mean():.1f} ± {ll_sim.std():.1f}",
                         "log p(x|θ), emulated": f"{ll_emu.mean():.1f} ± {ll_emu.std():.1f}", "z": float(z[i]),
                         "impossible": float(comparison.impossible_fraction[i])})
        outputs.table(section, rows, "the simulator's exact log-likelihood of simulated and of emulated draws "
                      "(mean ± standard deviation over the draws it can produce, and the two-sample z-score of the "
                      "means): an emulator's draws should be as typical as the simulator's; 'impossible' is the "
                      "fraction of emulated draws whose exact log-likelihood is −∞ (outside the simulator's support)")
        result["exact_log_likelihood"] = rows
    if comparison.gap_nats is not None:
        result["likelihood_gap_nats"] = comparison.gap_nats
        result["likelihood_gap_nats_per_dim"] = comparison.gap_nats_per_dim
    if comparison.spectrum is not None:
        result["power_spectrum_ratio"] = comparison.spectrum.ratio.tolist()
        result["power_spectrum_ratio_se"] = comparison.spectrum.ratio_se.tolist()
        result["max_log_spectrum_correlation_error"] = comparison.spectrum.max_correlation_error
        result["spectrum_maps"] = max(config.emulator_maps, config.spectrum_maps)
    if comparison.is_map:
        for i, label in enumerate(where):
            outputs.figure(section, f"emulator_power_spectra_{i}", f"θ = ({label}): binned power spectra, "
                           "simulated and emulated (bands: ±1 standard deviation over maps)",
                           plots.power_spectra(comparison.simulated[i], comparison.emulated[i]))
        outputs.figure(section, "emulator_maps", f"θ = ({where[0]}): simulated (top) and emulated (bottom) maps",
                       plots.maps(comparison.simulated[0], comparison.emulated[0]))
        sim_stats, emu_stats = (diagnostics.map_statistics(m[0], loc=float(comparison.simulated[0].mean()),
                                                           scale=float(comparison.simulated[0].std()))
                                for m in (comparison.simulated, comparison.emulated))
        edges = np.linspace(-1, 5, sim_stats["peak_counts"].shape[1] + 1)
        labels = [f"peaks, ν ∈ [{a:.1f}, {b:.1f})" for a, b in zip(edges[:-1], edges[1:], strict=True)]
        outputs.figure(section, "emulator_peak_counts", f"θ = ({where[0]}): peak counts per map by height bin",
                       plots.histograms(sim_stats["peak_counts"], emu_stats["peak_counts"], labels=labels))
    else:
        flat = [c[0].reshape(c.shape[1], -1) for c in (comparison.simulated, comparison.emulated)]
        outputs.figure(section, "emulator_histograms", f"θ = ({where[0]}): each observable, simulated vs emulated",
                       plots.histograms(*flat))
    say(f"  {comparison.summary()}")
    return {"summary": comparison.summary(), "table": comparison.table(), "flagged": comparison.flagged,
            "c2st": comparison.c2st.tolist(), **result}


# -------------------------------------------------------------------------------------------------- report


def _parameter_table(row: dict[str, Any], names: list[str]) -> list[dict[str, Any]]:
    """Per parameter: truth, and mean ± std of each set of draws in a :func:`check_observations` row."""
    sets = [k[: -len("_mean")] for k in row if k.endswith("_mean")]
    table = []
    for j, name in enumerate(names):
        line: dict[str, Any] = {"parameter": name}
        if "theta_true" in row:
            line["truth"] = row["theta_true"][j]
        for label in sets:
            line[f"{label} mean"] = row[f"{label}_mean"][j]
            line[f"{label} std"] = row[f"{label}_std"][j]
        table.append(line)
    return table


def write_report(path: Path, title: str, facts: dict[str, Any], outputs: Outputs) -> Path:
    """One self-contained HTML page (:class:`simgen.report.Report`): the run's key facts, then every section of
    ``outputs`` in order."""
    from .report import Report

    report = Report(title, subtitle=str(facts.get("configuration", "")))
    report.add_table(facts)
    for name, blocks in outputs.sections.items():
        if blocks and blocks[0][0] == "training":
            report.add_training(blocks[0][1], name=name)
            blocks = blocks[1:]
        elif blocks and blocks[0][0] == "data":
            theta, x, names, failed = blocks[0][1]
            report.add_data(theta, x, parameter_names=names, num_failed=failed)
            blocks = blocks[1:]
        else:
            report.section(name)
        for kind, payload, caption in blocks:
            if kind == "figure":
                report.add_figure(payload, caption)
            elif kind == "table":
                report.add_table(payload, caption=caption)
            elif kind == "verdict":
                report.add_verdict(payload, caption)
            elif kind == "text":
                report.add_text(payload)
    return report.write(path)


def report_from_folder(folder: Path, name: str = "report.html") -> Path:
    """Rewrite a run's report from what it left in ``folder`` (``summary.json`` or ``evaluation.json`` and the
    PNG figures it lists), e.g. after deleting or editing the HTML."""
    import matplotlib.pyplot as plt

    summary_path = next((folder / n for n in ("summary.json", "evaluation.json") if (folder / n).is_file()), None)
    if summary_path is None:
        raise FileNotFoundError(f"{folder} holds no summary.json or evaluation.json (the output of simgen run or "
                                "simgen evaluate)")
    summary = json.loads(summary_path.read_text())
    outputs = Outputs(folder / "figures")
    for item in summary.get("figures", []):
        png = Path(item["path"])
        png = png if png.is_absolute() else folder / png
        if not png.is_file():
            continue
        image = plt.imread(png)
        fig = plt.figure(figsize=(image.shape[1] / 100, image.shape[0] / 100), dpi=100)
        fig.figimage(image)
        outputs._section(item["section"]).append(("figure", fig, item["caption"]))
    title = f"simgen: {summary.get('simulator', folder.name)}"
    return write_report(folder / name, title, summary_facts(summary), outputs)


def summary_facts(summary: dict[str, Any]) -> dict[str, Any]:
    """The scalar entries of a summary, for the report's first table."""
    return {k: v for k, v in summary.items() if isinstance(v, str | int | float | bool)}


# ----------------------------------------------------------------------------------------------------- run


def estimate_seconds(config: RunConfig, simulator: Any) -> dict[str, float]:
    """A rough forecast of each step's seconds: the simulations from a timed pilot batch, the training from the
    configured time caps (early stopping often ends sooner), the checks from their sizes."""
    pilot = 32 if config.num_simulations >= 320 else 4
    simulate_at(simulator, simulator.prior.sample((2,)).float(), config.seed + 98)  # set-up costs, caches
    start = time.perf_counter()
    x_pilot = simulate_at(simulator, simulator.prior.sample((pilot,)).float(), config.seed + 99)
    per_sim = (time.perf_counter() - start) / pilot
    m = max(config.held_out, len(config.theta_obs or []), 1)
    n_sims = config.num_simulations + (config.calibration if config.posterior.enabled else 0) + m
    out = {"simulation": per_sim * n_sims + 2.0}
    for name, spec in (("posterior", config.posterior), ("emulator", config.likelihood), ("ratio", config.ratio),
                       ("joint", config.joint)):
        if spec.enabled:
            out[f"{name} training"] = float(spec.training.get("max_time") or 600.0) + 5.0
    if posterior_fits_emulator(config, simulator, tuple(x_pilot.shape[1:])):  # a second fit, capped alike
        out["posterior training"] *= 2
    checks = m * (2.0 + 12.0 * config.reference_samples / 10_000 * config.c2st)
    if config.posterior.enabled and config.calibration:
        checks += 5.0 + 0.05 * config.calibration
    if posterior_may_sample_by_importance(config, simulator, tuple(x_pilot.shape[1:])):
        # importance sampling draws and weighs proposals for every observation, held-out and calibration ones
        checks += 5.0 * m + 0.5 * config.calibration
    if config.likelihood.enabled:
        is_map = getattr(simulator, "x_kind", None) == "map"
        checks += 10.0 + per_sim * max(config.emulator_maps, config.spectrum_maps if is_map else 0) * m
        if config.likelihood.mcmc:
            checks += 60.0 * m
    if config.ratio.enabled:
        checks += 30.0 * m
    out["checks and report"] = checks + 5.0
    return out


@dataclass
class RunResult:
    """What :func:`run` made: the summary (also in ``summary.json``) and the paths it wrote."""

    summary: dict[str, Any]
    paths: dict[str, Path]


def run(config: RunConfig, simulator: Any, *, progress: bool = True, say: Say = _silent) -> RunResult:
    """The whole pipeline for a validated configuration (see the module docstring); returns what it wrote."""
    import simgen

    start = time.perf_counter()
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    outputs = Outputs(out / "figures")
    timings: dict[str, float] = {}

    def step(name: str) -> Callable[[], None]:
        t0 = time.perf_counter()
        return lambda: timings.__setitem__(name, round(time.perf_counter() - t0, 1))

    forecast = estimate_seconds(config, simulator)
    total = sum(forecast.values())
    parts = ", ".join(f"{k} ~{v:.0f} s" for k, v in forecast.items())
    say(f"simgen run: {config.simulator} from {config.source}, budget {config.budget!r}; expect up to about "
        f"{max(1, math.ceil(total / 60))} min ({parts})")

    done = step("simulation")
    say(f"[1/5] simulating {config.num_simulations} (θ, x) pairs")
    theta, x = simulate_training_set(config, simulator, progress=progress, say=say)
    gold = training_gold(config)
    observations = make_observations(config, simulator, tuple(x.shape[1:]))
    done()
    names = list(getattr(simulator, "parameter_names", None) or []) or None
    outputs.data("Data", theta, x, names, config.num_simulations - theta.shape[0])

    posterior = emulator = ratio = joint = None
    histories: dict[str, Any] = {}

    def fit_emulator_step(validation_index: Tensor | None = None) -> Any:
        done = step("emulator training")
        say(f"[3/5] fitting the emulator p(x | θ) ({config.likelihood.model})")
        fitted = fit_likelihood(config, simulator, theta, x, progress=progress, say=say, gold=gold,
                                validation_index=validation_index)
        histories["emulator"] = fitted.history
        done()
        return fitted

    # a posterior trained on emulated pairs needs the emulator first; where "auto" adds them and the run's
    # emulator is "auto" too, they come from the run's emulator rather than from a second one fitted alike
    emulated = config.posterior.enabled and (bool(config.posterior.num_emulated)
                                             or auto_emulated_from_run(config, simulator, theta, x, gold) > 0)
    held = None
    if config.likelihood.enabled and emulated:
        held = shared_held_out(config, theta[: config.posterior.num_train].shape[0])
        emulator = fit_emulator_step(held)
    if config.posterior.enabled:
        done = step("posterior training")
        say(f"[2/5] fitting the posterior p(θ | x) ({config.posterior.model})")
        posterior = fit_posterior(config, simulator, theta, x, progress=progress, say=say, gold=gold,
                                  emulator=emulator, validation_index=held)
        histories["posterior"] = posterior.history
        if posterior.emulator is not None and posterior.emulator is not emulator:
            histories["posterior's emulator"] = posterior.emulator.history  # fitted for its emulated pairs
        done()
    if config.likelihood.enabled and not emulated:
        emulator = fit_emulator_step()
    if config.ratio.enabled:
        done = step("ratio training")
        say(f"[3/5] fitting the ratio p(x | θ) / p(x) ({config.ratio.model})")
        ratio = fit_ratio(config, simulator, theta, x, progress=progress, say=say, gold=gold,
                          gold_reference=training_gold_reference(config))
        histories["ratio"] = ratio.history
        done()
    if config.joint.enabled:
        done = step("joint training")
        say(f"[3/5] fitting the joint p(θ, x) ({config.joint.model})")
        joint = fit_joint(config, simulator, theta, x, progress=progress, say=say)
        histories["joint"] = joint.history
        done()
    outputs.training("Training", histories)

    summary: dict[str, Any] = {
        "simulator": config.simulator, "simulator_options": config.simulator_options,
        "configuration": config.source, "budget": config.budget, "seed": config.seed,
        "num_simulations": int(theta.shape[0]), "observations": observations.source,
        "simgen_version": simgen.__version__,
    }
    for name, est, spec in (("posterior", posterior, config.posterior), ("emulator", emulator, config.likelihood)):
        if est is not None:
            summary[f"{name}_model"] = _chosen(est, spec.model)
    if posterior is not None and posterior.emulator is not None:
        summary["posterior_sample_with"] = posterior.sample_with
        summary["posterior_held_out"] = posterior.held_out.to_dict() if posterior.held_out is not None else None
    say(f"[4/5] inferring θ for {observations.x.shape[0]} observation(s) ({observations.source})")
    if posterior is not None or config.likelihood.mcmc or ratio is not None or joint is not None:
        done = step("inference and C2ST")
        rows = check_observations(config, simulator, observations, outputs, posterior=posterior,
                                  emulator=emulator, ratio=ratio, progress=progress, say=say, joint=joint)
        summary["observations_results"] = rows
        scores = [r["posterior_c2st"] for r in rows if "posterior_c2st" in r]
        if scores:
            summary["mean_c2st"] = round(float(np.mean(scores)), 4)
        done()
    say("[5/5] checking calibration and the emulator, writing the report")
    if posterior is not None and config.calibration > 0:
        done = step("calibration")
        summary["calibration"] = check_calibration(config, simulator, posterior, outputs, say=say)
        done()
    if emulator is not None:
        done = step("emulator checks")
        theta_check = observations.theta
        if theta_check is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed + 5)
                theta_check = simulator.prior.sample((3,)).float()
        summary["emulator"] = check_likelihood(config, simulator, emulator, theta_check, outputs, say=say)
        done()

    paths: dict[str, Path] = {"store": out / config.store}
    if config.save_models:
        for name, est in (("posterior", posterior), ("emulator", emulator), ("ratio", ratio), ("joint", joint)):
            if est is not None:
                est.save(out / f"{name}.pt")
                paths[f"{name} model"] = out / f"{name}.pt"
    if posterior is not None or config.likelihood.mcmc or ratio is not None or joint is not None:
        paths["samples"] = out / "samples.pt"
    paths["figures"] = outputs.folder
    paths["summary"] = out / "summary.json"
    summary["timings_seconds"] = timings
    summary["figures"] = [{**f, "path": str(Path(f["path"]).relative_to(out))} for f in outputs.files]
    paths["report"] = out / config.report
    summary["total_seconds"] = round(time.perf_counter() - start, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    if "report" in paths:
        write_report(paths["report"], f"simgen run: {config.simulator}", summary_facts(summary), outputs)
    return RunResult(summary, paths)


def fit_emulator(*args: Any, **kwargs: Any) -> Any:
    """Deprecated name of :func:`fit_likelihood`."""
    warnings.warn("simgen.pipeline.fit_emulator is now fit_likelihood", FutureWarning, stacklevel=2)
    return fit_likelihood(*args, **kwargs)


def check_emulator(*args: Any, **kwargs: Any) -> Any:
    """Deprecated name of :func:`check_likelihood`."""
    warnings.warn("simgen.pipeline.check_emulator is now check_likelihood", FutureWarning, stacklevel=2)
    return check_likelihood(*args, **kwargs)
