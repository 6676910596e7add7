"""The ``simgen run`` configuration: a TOML file (read with :mod:`tomllib`), validated before anything runs.

A configuration names a simulator, a simulation budget, the models to fit (a posterior p(θ | x), a likelihood
p(x | θ) — an emulator of the simulator — or both), the observations to infer θ from, the checks to run and
where to write everything.
:func:`load_config` returns a :class:`RunConfig` whose every value has been checked: an unknown key, a value of
the wrong type or outside its allowed set raises :class:`ConfigError` naming the key (``posterior.model``) and
what is allowed, before a single simulation runs. The simulator is built (not run) during validation, so its
options are checked too.

Budgets (``budget = "tiny" | "small" | "default"``) are presets of the numbers below; a key given explicitly
wins over the preset. ``"tiny"`` is for tests and smoke runs (seconds), ``"small"`` for a first look (about a
minute), ``"default"`` for results worth reading (minutes).

A ``[joint]`` table fits a :class:`~simgen.JointEstimator` (one all-in-one Simformer of p(θ, x), any conditional;
the run scores its posterior p(θ | x) like the others').

Paths inside a configuration file are relative to the file's folder. The likelihood's section is ``[likelihood]``;
the former name ``[emulator]`` is still read, with a ``FutureWarning``.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import tomllib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BUDGETS",
    "DEFAULT_CONFIG",
    "EXAMPLE_CONFIG",
    "ConfigError",
    "MCMC_KEYS",
    "ModelConfig",
    "RunConfig",
    "load_config",
    "parse_config",
    "parse_mcmc_options",
    "resolve_simulator",
]

#: presets: numbers a budget sets unless the configuration gives them
BUDGETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "num_simulations": 200, "posterior_epochs": 3, "posterior_time": 10.0, "emulator_epochs": 1,
        "emulator_time": 10.0, "num_samples": 200, "reference_samples": 200, "calibration": 20,
        "calibration_samples": 40, "emulator_maps": 10, "spectrum_maps": 10, "held_out": 2, "mcmc_chains": 20,
        "mcmc_warmup": 10,
    },
    "small": {
        "num_simulations": 4000, "posterior_epochs": 100, "posterior_time": 40.0, "emulator_epochs": 30,
        "emulator_time": 40.0, "num_samples": 2000, "reference_samples": 2000, "calibration": 100,
        "calibration_samples": 200, "emulator_maps": 64, "spectrum_maps": 256, "held_out": 3, "mcmc_chains": 100,
        "mcmc_warmup": 50,
    },
    "default": {
        "num_simulations": 50_000, "posterior_epochs": 300, "posterior_time": 200.0, "emulator_epochs": 200,
        "emulator_time": 120.0, "num_samples": 10_000, "reference_samples": 10_000, "calibration": 200,
        "calibration_samples": 500, "emulator_maps": 512, "spectrum_maps": 4096, "held_out": 3, "mcmc_chains": 200,
        "mcmc_warmup": 100,
    },
}

DIRECTIONS = ("posterior", "likelihood")
#: former section names still read (with a FutureWarning) -> their current name
SECTION_ALIASES = {"emulator": "likelihood"}
EMBEDDINGS = ("auto", "power_spectrum", "flatten")
DEVICES = ("auto", "cpu", "cuda", "cuda:<index>", "mps")
OBSERVATION_SUFFIXES = (".npy", ".pt", ".json")

_TOP_KEYS = ("seed", "device", "budget", "simulator", "simulation", "posterior", "likelihood", "emulator",
             "ratio", "joint", "observations", "evaluation", "output")
_SIMULATOR_KEYS = ("name", "options")
_SIMULATION_KEYS = ("num_simulations", "chunk_size", "store", "workers", "executor", "gold", "gold_reference")
_MODEL_KEYS = ("enabled", "model", "embedding", "options", "training", "mcmc", "num_train", "discrete_model", "gold",
               "gold_weight", "log_theta", "num_emulated", "sample_with")
_RATIO_KEYS = ("enabled", "model", "embedding", "options", "training", "num_train", "gold", "gold_weight")
_JOINT_KEYS = ("enabled", "model", "options", "training", "num_train")
_OBSERVATION_KEYS = ("held_out", "theta", "file", "true_theta")
_EVALUATION_KEYS = ("num_samples", "c2st", "reference_samples", "calibration", "calibration_samples",
                    "emulator_maps", "spectrum_maps", "mcmc_chains", "mcmc_warmup", "mcmc")
#: keys of ``[evaluation] mcmc``: options of :class:`~simgen.mcmc.MCMCPosterior` beside the chains and warm-up
MCMC_KEYS = ("method", "thin", "num_init", "init_ess", "max_init", "num_leapfrog", "target_accept", "proposal",
             "prior_weight")
_OUTPUT_KEYS = ("dir", "report", "save_models")


class ConfigError(ValueError):
    """An invalid configuration: ``key`` is the dotted key at fault (``"posterior.model"``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config key '{key}': {message}")
        self.key = key
        self.reason = message


@dataclass
class ModelConfig:
    """One direction's model: family, its constructor options, embedding (posteriors), training settings."""

    enabled: bool
    model: str
    options: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    embedding: str = "auto"
    mcmc: bool = False  #: likelihoods: also sample p(θ | x_obs) by MCMC on the likelihood
    num_train: int | None = None  #: train on the first this many valid simulations (``None``: all)
    nproc: int = 1  #: data-parallel processes ``simgen train`` launches through torchrun (``training.nproc``)
    #: likelihoods: how x's discrete columns are modelled, ``"mnle"`` or ``"dequantize"`` (``None``: the family's
    #: default, see :class:`~simgen.LikelihoodEstimator`)
    discrete_model: str | None = None
    #: ``"score"``: train on the joint score of a gold campaign (SCANDAL; the ratio's score term); ``[ratio]``
    #: also ``"ratio"`` (the ratio term, on the joint log ratio at ``[simulation] gold_reference``) or
    #: ``"ratio+score"`` (both); weight ``gold_weight`` (see :mod:`simgen.estimators.gold`); ``None``: plain
    gold: str | None = None
    gold_weight: float = 0.2  #: simgen.estimators.gold.DEFAULT_GOLD_WEIGHT (not imported here: torch-free)
    #: likelihoods: the θ dimensions fed as log θ: ``True`` the prior's positive ones (``None``: the estimator's
    #: default, which is that), ``False`` none, or a list (see :class:`~simgen.LikelihoodEstimator`)
    log_theta: bool | list[int] | None = None
    #: posteriors: pairs drawn from an emulator to train on beside the simulations
    #: (``PosteriorEstimator.fit(..., emulator=, num_emulated=)``): the run's ([likelihood]) when there is one,
    #: else one the posterior fits; 0: none; ``None``: the estimator's default (``"auto"`` chooses)
    num_emulated: int | None = None
    #: posteriors: ``"auto"``, ``"direct"`` or ``"importance"`` (``PosteriorEstimator(..., sample_with=)``: sample
    #: by the family, or by importance sampling of the emulator's posterior where there are emulated pairs)
    sample_with: str = "auto"


@dataclass
class RunConfig:
    """A validated ``simgen run`` configuration (see the module docstring and :data:`EXAMPLE_CONFIG`)."""

    simulator: str
    simulator_options: dict[str, Any]
    seed: int = 0
    device: str = "auto"
    budget: str = "default"
    num_simulations: int = 20_000
    chunk_size: int = 1000
    store: str = "store.h5"
    workers: int = 0
    executor: str = ""
    #: ``[simulation] gold``: mine each simulation's joint score from the simulator's latents (``simulate(...,
    #: gold=True)``); the models with ``gold = "score"`` train on it
    gold: bool = False
    #: ``[simulation] gold_reference``: θ_ref rows ``[k, d_theta]`` of the joint log ratio (``simulate(...,
    #: gold_reference=...)``), which ``[ratio] gold = "ratio"`` (or ``"ratio+score"``) trains on
    gold_reference: list[list[float]] | None = None
    posterior: ModelConfig = field(default_factory=lambda: ModelConfig(True, "auto"))
    likelihood: ModelConfig = field(default_factory=lambda: ModelConfig(False, "auto"))
    #: ``[ratio]``: a neural ratio estimator, its posterior sampled by MCMC (``model`` is its variant)
    ratio: ModelConfig = field(default_factory=lambda: ModelConfig(False, "nre"))
    #: ``[joint]``: an all-in-one model of p(θ, x) (:class:`~simgen.JointEstimator`; ``model`` is ``"simformer"``)
    joint: ModelConfig = field(default_factory=lambda: ModelConfig(False, "simformer"))
    held_out: int = 3
    theta_obs: list[list[float]] | None = None
    obs_file: str | None = None
    true_theta: list[list[float]] | None = None
    num_samples: int = 10_000
    c2st: bool = True
    reference_samples: int = 10_000
    calibration: int = 200
    calibration_samples: int = 500
    emulator_maps: int = 512
    #: maps per θ (simulated and emulated) for the power-spectrum check of a map emulator, at least
    #: ``emulator_maps``: its log C_ℓ correlations across maps need thousands to be resolved to 0.1
    spectrum_maps: int = 4096
    mcmc_chains: int = 200
    mcmc_warmup: int = 100
    #: further options of every MCMC posterior the run samples (``[evaluation] mcmc``; :data:`MCMC_KEYS`)
    mcmc: dict[str, Any] = field(default_factory=dict)
    out_dir: str = "simgen-out"
    report: str = "report.html"
    save_models: bool = True
    #: folder relative paths are resolved against (the configuration file's)
    base_dir: str = "."
    #: where the configuration came from (a path, or "embedded default")
    source: str = "embedded default"

    def path(self, name: str) -> Path:
        """``name`` resolved against :attr:`base_dir` (absolute paths unchanged)."""
        p = Path(name).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p

    @property
    def out(self) -> Path:
        return self.path(self.out_dir)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def emulator(self) -> ModelConfig:
        """Former name of :attr:`likelihood`."""
        return self.likelihood

    @emulator.setter
    def emulator(self, value: ModelConfig) -> None:
        self.likelihood = value


DEFAULT_CONFIG = """\
# The embedded default of `simgen run`: weak-lensing-like convergence maps with an exact posterior.
seed = 0
device = "auto"
budget = "default"

[simulator]
name = "cosmology_maps"                # Gaussian field with shape noise, theta = (Omega_m, sigma_8, w_0)
options = { n_pix = 32 }

[simulation]
store = "store.h5"

[posterior]
model = "auto"                         # the flow
embedding = "power_spectrum"           # log power in shells of |m| -> MLP (sufficient statistics for this field)
training = { patience = 15 }

[likelihood]
model = "auto"                         # on maps the map flow (MapFlow): exact log p, one-pass sampling
training = { max_time = 240 }          # on all 50 000 maps (the low-l power at the prior's edges needs
                                       # every map)

[observations]                         # held-out simulations (3; 2 with budget "tiny"), compared with the
                                       # exact posterior

[output]
dir = "simgen-out"
"""

EXAMPLE_CONFIG = """\
# simgen run configuration (written by `simgen init`). Run it with: simgen run simgen.toml
# Every key is optional except [simulator].name. Paths are relative to this file's folder.

seed = 0                     # seeds simulation, training and sampling
device = "auto"              # "auto" (CUDA when present), "cpu", "cuda", "cuda:1", "mps"
budget = "small"             # "tiny" (seconds) | "small" (about a minute) | "default" (minutes): presets of the
                             # numbers below; a key given here wins over its preset

[simulator]
name = "two_moons"           # a registered simulator: two_moons, gaussian_linear, slcp, gaussian_mixture,
                             #   cosmology_maps, collider, collider_detector, double_well, external
                             # or your own: "mypackage.module:make_simulator" (called with the options below;
                             #   it returns an object with .prior (a torch Distribution) and __call__(theta) -> x)
options = {}                 # keyword arguments of the simulator, e.g. { n_pix = 16 } for cosmology_maps
# An external program (no shell is used; see simulators/external.py for the exchange protocol):
# name = "external"
# options = { command = ["./my_sim", "{input}"], prior = { low = [0, 0], high = [1, 1] }, x_shape = [3],
#             timeout = 60 }

[simulation]
# num_simulations = 4000     # simulation attempts (failed ones are kept in the store, left out of training)
chunk_size = 1000            # simulations per stored chunk; with the seed it alone fixes the results
store = "store.h5"           # campaign store under the output folder: run again to resume or extend
workers = 0                  # local worker processes (0: this process)
executor = ""                # "" (local), "dask" (a local dask cluster) or "tcp://host:8786" (a scheduler)
# gold = true                # also mine each simulation's joint score from the simulator's latents (simulators
                             # with return_latents and joint_log_prob, e.g. collider); models train on it with
                             # gold = "score" (SCANDAL; the ratio's score term) and gold_weight = 0.2 in their table
# gold_reference = [[500.0, 20.0, 1.0]]  # θ_ref rows: also mine the joint log ratio, for [ratio] gold = "ratio"
                             # or "ratio+score" (the ratio term of RASCAL/ALICES)

[posterior]                  # p(theta | x), amortised over x
enabled = true
model = "auto"               # "auto" (chosen from the data: see the README) | "flow" | "mapflow" | "cnf" |
                             # "diffusion" | "vae" | "simformer" (installed; "flow" on maps is the map flow)
embedding = "auto"           # "auto" (CNN for maps, none for vectors) | "power_spectrum" (maps) | "flatten"
options = {}                 # a named family's constructor arguments, e.g. { transforms = 5, hidden_features = 64 }
training = {}                # TrainingConfig fields, e.g. { max_epochs = 100, max_time = 60, batch_size = 256 }
                             # (precision = "bf16" or "16": mixed-precision training steps; default "32")
# num_train = 10000          # train on the first this many valid simulations (default: all of them)
# num_emulated = 30000       # also train on this many pairs drawn from an emulator (the run's [likelihood] when
                             # enabled, else one fitted on the simulations); 0: none; default: "auto" chooses
                             # (from the run's [likelihood] emulator when that is "auto" too)
# sample_with = "auto"       # with emulated pairs: "importance" samples the emulator's posterior by importance
                             # sampling from the family's; "direct" the family alone; "auto" (default) whichever
                             # scores better on held-out simulations

[likelihood]                 # p(x | theta), an emulator (surrogate) of the simulator
enabled = false
model = "auto"               # "auto" (maps: "mapflow", else "flow") | "flow" (on maps: "mapflow") | "cnf" |
                             # "diffusion" | "vae"
mcmc = false                 # also infer theta by MCMC on the emulator's likelihood
# discrete_model = "mnle"    # x's discrete columns (the simulator's x_discrete): "mnle" (categorical network +
                             # flow, the default for a flow) | "dequantize" (uniform noise, other families)
# log_theta = true           # feed theta as log theta where the prior is positive (the default) | false | [0, 1]
options = {}                 # e.g. { whiten = "mapflow" } (a cnf or diffusion on maps whitened by a map flow),
                             # { filter_network = "per_radius" } (the map flow's former filters)
training = {}

# [ratio]                    # a classifier of p(x | theta) / p(x) (neural ratio estimation), posterior by MCMC
# enabled = true
# model = "nre"              # "nre" (recommended) | "nre_a" | "nre_b" | "nre_c" | "bnre" (balanced: conservative)
#                            #   | "tre" (telescoping: narrow posteriors)
# embedding = "auto"         # as [posterior]
# options = {}               # e.g. { num_classes = 5, gamma = 1.0 } (nre_c), { regularization = 100 } (bnre),
#                            #   { num_waymarks = 8 } (tre),
#                            #   { hidden_features = 64, num_blocks = 2 }
# training = {}

# [joint]                    # one all-in-one model of p(theta, x) (Simformer): samples any conditional; the run
# enabled = true             #   scores its posterior p(theta | x) (vector x only)
# model = "simformer"
# options = {}               # e.g. { hidden_features = 64, num_blocks = 4, steps = 25 }
# training = {}

[observations]               # what to infer theta from: one of
held_out = 3                 # simulations at fresh prior draws (their true theta is known), or
# theta = [[0.5, 0.5]]       # simulations at these theta ("simulate at theta = ..."), or
# file = "x_obs.npy"         # observed data [m, *x_shape] (.npy, .pt or .json), each row one observation
# true_theta = [[0.5, 0.5]]  # (optional, with file) the parameters behind the file's rows

[evaluation]
# num_samples = 2000         # posterior draws per observation
c2st = true                  # C2ST against the simulator's reference posterior, when it has one
# calibration = 100          # held-out simulations for coverage and SBC (0: skip)
# emulator_maps = 64         # emulated simulations per check of the emulator against the simulator
# spectrum_maps = 4096       # maps: simulated and emulated maps per θ for the power spectrum and its correlations
# mcmc_chains = 100          # chains (and warm-up sweeps) of the MCMC through the emulator ([likelihood].mcmc)
# mcmc_warmup = 50
# mcmc = { method = "mala", thin = 10, init_ess = 50 }   # further MCMC options (simgen.mcmc.MCMCPosterior's)
# mcmc = { proposal = "posterior" }   # start the chains from the run's [posterior] (SIR from it, not the prior)

[output]
dir = "simgen-out"           # everything goes here: store, models, figures, summary.json, the report
report = "report.html"
save_models = true
"""


# ----------------------------------------------------------------------------------------------- checks


def _table(raw: Any, key: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(key, f"must be a table ([{key}]); got {type(raw).__name__} {raw!r}")
    for k in raw:
        if k not in allowed:
            where = f" in [{key}]" if key else " at the top level"
            raise ConfigError(f"{key}.{k}" if key else k, f"unknown key; allowed keys{where}: {', '.join(allowed)}")
    return raw


def _int(raw: Any, key: str, low: int = 0) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ConfigError(key, f"must be an integer >= {low}; got {raw!r}")
    if raw < low:
        raise ConfigError(key, f"must be an integer >= {low}; got {raw}")
    return raw


def _number(raw: Any, key: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise ConfigError(key, f"must be a finite number; got {raw!r}")
    return float(raw)


def _bool(raw: Any, key: str) -> bool:
    if not isinstance(raw, bool):
        raise ConfigError(key, f"must be true or false; got {raw!r}")
    return raw


def _str(raw: Any, key: str, allowed: tuple[str, ...] | None = None) -> str:
    if not isinstance(raw, str):
        hint = f"one of {', '.join(repr(a) for a in allowed)}" if allowed else "a string"
        raise ConfigError(key, f"must be {hint}; got {raw!r}")
    if allowed is not None and raw not in allowed:
        raise ConfigError(key, f"must be one of {', '.join(repr(a) for a in allowed)}; got {raw!r}")
    return raw


def parse_mcmc_options(raw: Any, key: str = "evaluation.mcmc") -> dict[str, Any]:
    """The MCMC options of a configuration's ``[evaluation] mcmc`` table (or the CLI's ``--mcmc``), checked.

    Keys are :data:`MCMC_KEYS`, with the meanings of :class:`~simgen.mcmc.MCMCPosterior`'s arguments: ``method``
    (``"mala"``, ``"hmc"`` or ``"slice"``), ``thin``, ``num_init``, ``max_init`` and ``num_leapfrog`` (integers
    >= 1), ``init_ess`` (a number >= 0), ``target_accept`` (in (0, 1)), ``proposal`` (a string: ``"posterior"``,
    the run's own posterior estimator, or the path of a saved one; resolved by
    :func:`simgen.pipeline.mcmc_options`) and ``prior_weight`` (in [0, 1)). The number of chains and the warm-up
    are ``mcmc_chains`` and ``mcmc_warmup``.

    Raises:
        ConfigError: not a table, an unknown key, or a value of the wrong type or range.
    """
    from .mcmc import METHODS

    table = _table(raw, key, MCMC_KEYS)
    out: dict[str, Any] = {}
    for k, v in table.items():
        where = f"{key}.{k}"
        if k == "method":
            out[k] = _str(v, where, METHODS)
        elif k == "proposal":
            out[k] = _str(v, where)
            if not out[k]:
                raise ConfigError(where, "must be \"posterior\" (the run's posterior) or the path of a saved "
                                  "posterior estimator; got an empty string")
        elif k in ("init_ess", "target_accept", "prior_weight"):
            out[k] = _number(v, where)
            if k == "prior_weight" and not 0 <= out[k] < 1:
                raise ConfigError(where, f"must lie in [0, 1); got {v!r}")
            if k == "init_ess" and out[k] < 0:
                raise ConfigError(where, f"must be a number >= 0; got {v!r}")
            if k == "target_accept" and not 0 < out[k] < 1:
                raise ConfigError(where, f"must lie in (0, 1); got {v!r}")
        else:
            out[k] = _int(v, where, 1)
    if out.get("max_init", math.inf) < out.get("num_init", 1):
        raise ConfigError(f"{key}.max_init", f"must be >= num_init ({out['num_init']}); got {out['max_init']}")
    return out


def _matrix(raw: Any, key: str, columns: int | None) -> list[list[float]]:
    """A list of rows of numbers (a single row may be given flat)."""
    if isinstance(raw, list) and raw and all(isinstance(v, int | float) and not isinstance(v, bool) for v in raw):
        raw = [raw]
    if not isinstance(raw, list) or not raw or not all(isinstance(r, list) for r in raw):
        raise ConfigError(key, f"must be a list of parameter rows, e.g. [[0.3, 0.8, -1.0]]; got {raw!r}")
    rows = [[_number(v, key) for v in r] for r in raw]
    if columns is not None and any(len(r) != columns for r in rows):
        bad = next(r for r in rows if len(r) != columns)
        raise ConfigError(key, f"every row must have d_theta = {columns} numbers (the prior's); got {bad}")
    return rows


def _device(raw: Any) -> str:
    device = _str(raw, "device")
    if device in ("auto", "cpu", "cuda", "mps") or (device.startswith("cuda:") and device[5:].isdigit()):
        return device
    raise ConfigError("device", f"must be one of {', '.join(repr(d) for d in DEVICES)}; got {device!r}")


def _families() -> tuple[str, ...]:
    from .models import MODELS

    return tuple(sorted(MODELS))


def _training(raw: Any, key: str) -> dict[str, Any]:
    from .training import TrainingConfig

    names = tuple(f.name for f in dataclasses.fields(TrainingConfig))
    settings = dict(_table(raw, key, names))
    try:
        TrainingConfig(**settings)
    except (TypeError, ValueError) as e:
        raise ConfigError(key, str(e)) from None
    return settings


def _section(raw: dict[str, Any], name: str) -> str:
    """The key under which section ``name`` is given: ``name`` itself, or a former name (with a FutureWarning)."""
    former = [old for old, new in SECTION_ALIASES.items() if new == name and old in raw]
    if not former:
        return name
    if name in raw:
        raise ConfigError(former[0], f"[{former[0]}] is the former name of [{name}]; give one of them")
    warnings.warn(f"the config section [{former[0]}] is now called [{name}]; [{former[0]}] will stop being read "
                  "in a later version", FutureWarning, stacklevel=4)
    return former[0]


def _model(raw: Any, key: str, direction: str) -> ModelConfig:
    """A ``[posterior]`` or ``[likelihood]`` table (``None``: absent; a present table is enabled by default)."""
    table = _table({} if raw is None else raw, key, _MODEL_KEYS)
    enabled = _bool(table.get("enabled", raw is not None or direction == "posterior"), f"{key}.enabled")
    from .estimators.auto import AUTO

    model = _str(table.get("model", AUTO), f"{key}.model", (AUTO, *_families()))
    options = table.get("options", {})
    if not isinstance(options, dict):
        raise ConfigError(f"{key}.options", f"must be a table of the {model} family's constructor arguments; "
                          f"got {options!r}")
    if model == AUTO and options:
        raise ConfigError(f"{key}.options", f"model = \"auto\" chooses the family and its options from the data; "
                          f"name a family (e.g. model = \"flow\") to give it options; got {options!r}")
    from .models import KIND_MODELS, MODELS

    # a name may stand for another family on some kinds of data ("flow" on maps is "mapflow"): the options must
    # suit one of them, and the run builds the one that suits the simulator's x
    names = [model] + [to for (name, _), to in KIND_MODELS.items() if name == model]
    errors = []
    for name in names if model != AUTO else ():  # "auto" has no options to check (refused above)
        try:
            MODELS[name](**options)
            break
        except (TypeError, ValueError) as e:
            errors.append(f"{name}: {e}")
    if errors and len(errors) == len(names):
        raise ConfigError(f"{key}.options", f"not accepted by the {model} family ({'; '.join(errors)})")
    embedding = _str(table.get("embedding", "auto"), f"{key}.embedding", EMBEDDINGS)
    if direction == "likelihood" and "embedding" in table:
        raise ConfigError(f"{key}.embedding", "a likelihood's context is θ (no embedding); remove the key")
    mcmc = _bool(table.get("mcmc", False), f"{key}.mcmc")
    if direction == "posterior" and "mcmc" in table:
        raise ConfigError(f"{key}.mcmc", "only [likelihood] has mcmc (inference through the emulator's likelihood)")
    num_train = _int(table["num_train"], f"{key}.num_train", 10) if "num_train" in table else None
    training, nproc = table.get("training", {}), 1
    if isinstance(training, dict) and "nproc" in training:  # how to launch training, not a TrainingConfig field
        training = {k: v for k, v in training.items() if k != "nproc"}
        nproc = _int(table["training"]["nproc"], f"{key}.training.nproc", 1)
    discrete_model = None
    if "discrete_model" in table:
        if direction != "likelihood":
            raise ConfigError(f"{key}.discrete_model", "only [likelihood] models x's discrete columns")
        discrete_model = _str(table["discrete_model"], f"{key}.discrete_model", ("mnle", "dequantize"))
    log_theta = None
    if "log_theta" in table:
        if direction != "likelihood":
            raise ConfigError(f"{key}.log_theta", "only [likelihood] has θ as its context")
        log_theta = _log_theta(table["log_theta"], f"{key}.log_theta")
    num_emulated = None
    if "num_emulated" in table:
        if direction != "posterior":
            raise ConfigError(f"{key}.num_emulated", "only [posterior] trains on pairs drawn from the emulator")
        num_emulated = _int(table["num_emulated"], f"{key}.num_emulated", 0)
    sample_with = "auto"
    if "sample_with" in table:
        if direction != "posterior":
            raise ConfigError(f"{key}.sample_with", "only [posterior] samples by importance of its emulator's "
                              "posterior")
        sample_with = _str(table["sample_with"], f"{key}.sample_with", ("auto", "direct", "importance"))
        if sample_with == "importance" and num_emulated == 0:
            raise ConfigError(f"{key}.sample_with", "\"importance\" samples the emulator's posterior, and "
                              "num_emulated = 0 trains no emulator")
    gold, gold_weight = _gold(table, key, ratio=False)
    if num_emulated and gold is not None:
        raise ConfigError(f"{key}.num_emulated", "emulated pairs have no joint score: not with gold")
    if gold is not None and model != AUTO:  # "auto" chooses exact families only
        from .models import MODELS as _MODELS

        kind = _MODELS[model].log_prob_kind
        if kind != "exact":
            raise ConfigError(f"{key}.gold", f"gold = \"score\" trains the θ-gradient of an exact log-density; the "
                              f"{model} family's log_prob is {kind!r}: use model = \"flow\"")
    return ModelConfig(enabled, model, dict(options), _training(training, f"{key}.training"),
                       embedding, mcmc, num_train, nproc, discrete_model, gold, gold_weight, log_theta, num_emulated,
                       sample_with)


def _log_theta(value: Any, key: str) -> bool | list[int]:
    """``log_theta``: a boolean or a list of θ dimensions (integers ≥ 0)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, list) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value):
        return list(value)
    raise ConfigError(key, f"must be true, false or a list of theta dimensions such as [0, 1]; got {value!r}")


def _gold(table: dict[str, Any], key: str, *, ratio: bool) -> tuple[str | None, float]:
    """A model table's ``gold`` (a ratio mode outside ``[ratio]`` is refused with the reason) and
    ``gold_weight`` (checked as the estimators check them)."""
    from .estimators.gold import DEFAULT_GOLD_WEIGHT, DENSITY_GOLD_MODES, GOLD_MODES, check_gold_options

    modes = GOLD_MODES if ratio else DENSITY_GOLD_MODES
    gold = _str(table["gold"], f"{key}.gold", GOLD_MODES) if "gold" in table else None
    if gold is not None:
        try:
            check_gold_options(gold, 0.0, modes)
        except ValueError as e:
            raise ConfigError(f"{key}.gold", str(e)) from None
    weight = table.get("gold_weight", DEFAULT_GOLD_WEIGHT)
    if "gold_weight" in table and gold is None:
        raise ConfigError(f"{key}.gold_weight", "goes with gold (\"score\", or for [ratio] \"ratio\", "
                          "\"ratio+score\")")
    try:
        return check_gold_options(gold, weight, modes)
    except ValueError as e:
        raise ConfigError(f"{key}.gold_weight", str(e)) from None


def _ratio(raw: Any) -> ModelConfig:
    """The ``[ratio]`` table (``None``: absent; a present table is enabled by default)."""
    table = _table({} if raw is None else raw, "ratio", _RATIO_KEYS)
    enabled = _bool(table.get("enabled", raw is not None), "ratio.enabled")
    from .estimators.ratio import RATIO_MODELS, RATIO_OPTIONS, RatioEstimator

    model = _str(table.get("model", "nre"), "ratio.model", ("nre", *sorted(RATIO_MODELS)))
    options = table.get("options", {})
    if not isinstance(options, dict):
        raise ConfigError("ratio.options", f"must be a table of RatioEstimator's arguments; got {options!r}")
    unknown = sorted(set(options) - set(RATIO_OPTIONS))
    if unknown:
        raise ConfigError("ratio.options", f"unknown options {unknown}; allowed: {', '.join(RATIO_OPTIONS)}")
    import torch
    from torch.distributions import Independent, Normal

    try:  # the options are checked by building the estimator (for any prior: they do not depend on it)
        RatioEstimator(Independent(Normal(torch.zeros(1), torch.ones(1)), 1), model, **options)
    except (TypeError, ValueError) as e:
        raise ConfigError("ratio.options", f"not accepted by the {model} ratio estimator ({e})") from None
    embedding = _str(table.get("embedding", "auto"), "ratio.embedding", EMBEDDINGS)
    num_train = _int(table["num_train"], "ratio.num_train", 10) if "num_train" in table else None
    gold, gold_weight = _gold(table, "ratio", ratio=True)
    return ModelConfig(enabled, model, dict(options), _training(table.get("training", {}), "ratio.training"),
                       embedding, False, num_train, gold=gold, gold_weight=gold_weight)


def _joint(raw: Any) -> ModelConfig:
    """The ``[joint]`` table (``None``: absent; a present table is enabled by default)."""
    table = _table({} if raw is None else raw, "joint", _JOINT_KEYS)
    enabled = _bool(table.get("enabled", raw is not None), "joint.enabled")
    model = _str(table.get("model", "simformer"), "joint.model", ("simformer",))
    options = table.get("options", {})
    if not isinstance(options, dict):
        raise ConfigError("joint.options", f"must be a table of the Simformer's constructor arguments; got "
                          f"{options!r}")
    from .models import Simformer

    try:
        Simformer(**options)
    except (TypeError, ValueError) as e:
        raise ConfigError("joint.options", f"not accepted by the Simformer ({e})") from None
    num_train = _int(table["num_train"], "joint.num_train", 10) if "num_train" in table else None
    return ModelConfig(enabled, model, dict(options), _training(table.get("training", {}), "joint.training"),
                       "flatten", False, num_train)


# --------------------------------------------------------------------------------------------- simulators


def resolve_simulator(name: str, options: dict[str, Any], *, base_dir: str | Path = ".") -> Any:
    """Build the simulator a configuration names, without simulating.

    ``name`` is a registry name (``simulators.available()``), ``"external"`` (a command-line program; its
    ``cwd`` defaults to ``base_dir``), or ``"package.module:attribute"``: a factory called with ``options``
    (a :class:`simulators.Simulator` subclass, or any function returning an object with a ``prior`` and
    ``__call__(theta) -> x``), or such an object itself (then ``options`` must be empty).

    Raises:
        ConfigError: an unknown name, a module or attribute that cannot be imported, options the simulator
            refuses, or a result without a torch ``Distribution`` prior.
    """
    from torch.distributions import Distribution

    import simulators

    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise ConfigError("simulator.name", f"cannot import module {module_name!r} ({e}); make it importable "
                              "(installed, or on PYTHONPATH)") from None
        try:
            target = getattr(module, attr)
        except AttributeError:
            raise ConfigError("simulator.name", f"module {module_name!r} has no attribute {attr!r}") from None
        sim = _call_factory(target, options, name) if _is_factory(target) else target
        if not _is_factory(target) and options:
            raise ConfigError("simulator.options", f"{name} is an object, not a factory: it takes no options")
    else:
        available = simulators.available()
        if name not in available:
            raise ConfigError("simulator.name", f"must be one of {', '.join(available)} or "
                              f"'package.module:factory'; got {name!r}")
        if name == "external":
            options = {"cwd": str(base_dir), **options}
        sim = _call_factory(lambda **kw: simulators.get(name, **kw), options, name)
    prior = getattr(sim, "prior", None)
    if not isinstance(prior, Distribution) or not callable(sim):
        raise ConfigError("simulator.name", f"{name} must give a callable simulator with a .prior torch "
                          f"Distribution; got {type(sim).__name__} with prior {type(prior).__name__}")
    if len(prior.event_shape) != 1:
        raise ConfigError("simulator.name", f"{name}'s prior must have event shape [d_theta]; got "
                          f"{list(prior.event_shape)}")
    return sim


def _is_factory(target: Any) -> bool:
    return isinstance(target, type) or (callable(target) and getattr(target, "prior", None) is None)


def _call_factory(factory: Callable[..., Any], options: dict[str, Any], name: str) -> Any:
    try:
        return factory(**options)
    except (TypeError, ValueError) as e:
        raise ConfigError("simulator.options", f"not accepted by {name}: {e}") from None


# ----------------------------------------------------------------------------------------------- loading


def parse_config(text: str, *, source: str = "<string>", base_dir: str | Path = ".",
                 build_simulator: bool = True, budget: str | None = None) -> tuple[RunConfig, Any]:
    """Validate a configuration's TOML ``text``; returns the :class:`RunConfig` and the simulator it names
    (``None`` when ``build_simulator=False``). ``budget`` replaces the file's ``budget`` (a command line's
    ``--budget``); keys the file sets explicitly still win over the preset.

    Raises:
        ConfigError: the first problem found, naming its key and what is allowed.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("(file)", f"{source} is not valid TOML: {e}") from None
    _table(raw, "", _TOP_KEYS)
    if budget is not None:
        raw["budget"] = budget
    seed = _int(raw.get("seed", 0), "seed")
    device = _device(raw.get("device", "auto"))
    budget = _str(raw.get("budget", "default"), "budget", tuple(BUDGETS))
    preset = BUDGETS[budget]

    sim_raw = raw.get("simulator")
    if sim_raw is None:
        raise ConfigError("simulator.name", "missing: name a registered simulator, 'package.module:factory' or "
                          "'external'")
    if isinstance(sim_raw, str):
        sim_raw = {"name": sim_raw}
    sim_table = _table(sim_raw, "simulator", _SIMULATOR_KEYS)
    if "name" not in sim_table:
        raise ConfigError("simulator.name", "missing: name a registered simulator, 'package.module:factory' or "
                          "'external'")
    sim_name = _str(sim_table["name"], "simulator.name")
    sim_options = sim_table.get("options", {})
    if not isinstance(sim_options, dict):
        raise ConfigError("simulator.options", f"must be a table of keyword arguments; got {sim_options!r}")

    simulation = _table(raw.get("simulation", {}), "simulation", _SIMULATION_KEYS)
    num_simulations = _int(simulation.get("num_simulations", preset["num_simulations"]),
                           "simulation.num_simulations", 10)
    chunk_size = _int(simulation.get("chunk_size", 1000), "simulation.chunk_size", 1)
    store = _str(simulation.get("store", "store.h5"), "simulation.store")
    workers = _int(simulation.get("workers", 0), "simulation.workers")
    executor = _str(simulation.get("executor", ""), "simulation.executor")
    if executor and executor != "dask" and "://" not in executor:
        raise ConfigError("simulation.executor", f"must be '', 'dask' or a scheduler address 'tcp://host:port'; "
                          f"got {executor!r}")
    if executor and workers:
        raise ConfigError("simulation.workers", "give workers or executor, not both")
    gold = _bool(simulation.get("gold", False), "simulation.gold")
    gold_reference = None
    if "gold_reference" in simulation:
        if not gold:
            raise ConfigError("simulation.gold_reference", "goes with gold = true (the joint log ratio is part of "
                              "the gold)")
        gold_reference = _matrix(simulation["gold_reference"], "simulation.gold_reference", None)

    posterior = _model(raw.get("posterior"), "posterior", "posterior")
    likelihood_key = _section(raw, "likelihood")
    likelihood = _model(raw.get(likelihood_key), likelihood_key, "likelihood")
    ratio = _ratio(raw.get("ratio"))
    joint = _joint(raw.get("joint"))
    if not (posterior.enabled or likelihood.enabled or ratio.enabled or joint.enabled):
        raise ConfigError("posterior.enabled", "at least one of [posterior], [likelihood], [ratio] and [joint] "
                          "must be enabled")
    # the budget presets keep their former key names (emulator_epochs, emulator_time); a ratio estimator trains
    # on the posterior's budget (both read x through an embedding)
    for cfg, key in ((posterior, "posterior"), (likelihood, likelihood_key), (ratio, "ratio")):
        if cfg.enabled and cfg.gold is not None and not gold:
            raise ConfigError(f"{key}.gold", "trains on the joint score: set [simulation] gold = true (a simulator "
                              "with return_latents and joint_log_prob, see simgen.campaign.gold)")
    if ratio.enabled and ratio.gold in ("ratio", "ratio+score") and gold_reference is None:
        raise ConfigError("ratio.gold", f"{ratio.gold!r} trains on the joint log ratio: set [simulation] "
                          "gold_reference = [[...]] (the θ_ref rows it is mined at)")
    for cfg, preset_key in ((posterior, "posterior"), (likelihood, "emulator"), (ratio, "posterior"),
                            (joint, "posterior")):
        cfg.training.setdefault("max_epochs", preset[f"{preset_key}_epochs"])
        cfg.training.setdefault("max_time", preset[f"{preset_key}_time"])

    obs = _table(raw.get("observations", {}), "observations", _OBSERVATION_KEYS)
    given = [k for k in ("held_out", "theta", "file") if k in obs]
    if len(given) > 1:
        raise ConfigError(f"observations.{given[1]}", f"give one of held_out, theta, file; got {', '.join(given)}")
    held_out = _int(obs.get("held_out", 0 if given else preset["held_out"]), "observations.held_out")
    obs_file = _str(obs["file"], "observations.file") if "file" in obs else None
    if obs_file is not None and Path(obs_file).suffix not in OBSERVATION_SUFFIXES:
        raise ConfigError("observations.file", f"must end in one of {', '.join(OBSERVATION_SUFFIXES)}; "
                          f"got {obs_file!r}")
    if "true_theta" in obs and obs_file is None:
        raise ConfigError("observations.true_theta", "goes with observations.file (held_out and theta know "
                          "their parameters)")

    evaluation = _table(raw.get("evaluation", {}), "evaluation", _EVALUATION_KEYS)
    ev = {k: _int(evaluation.get(k, preset[k]), f"evaluation.{k}", 0 if k in ("calibration", "mcmc_warmup") else 1)
          for k in ("num_samples", "reference_samples", "calibration", "calibration_samples", "emulator_maps",
                    "spectrum_maps", "mcmc_chains", "mcmc_warmup")}
    c2st = _bool(evaluation.get("c2st", True), "evaluation.c2st")
    mcmc = parse_mcmc_options(evaluation.get("mcmc", {}))
    if mcmc.get("proposal") == "posterior" and not posterior.enabled:
        raise ConfigError("evaluation.mcmc.proposal", "\"posterior\" starts the chains from the run's posterior "
                          "estimator, but [posterior] is not enabled: enable it, or give the path of a saved one")

    output = _table(raw.get("output", {}), "output", _OUTPUT_KEYS)
    out_dir = _str(output.get("dir", "simgen-out"), "output.dir")
    report = _str(output.get("report", "report.html"), "output.report")
    if not report.endswith(".html"):
        raise ConfigError("output.report", f"must be a file name ending in .html; got {report!r}")
    save_models = _bool(output.get("save_models", True), "output.save_models")

    config = RunConfig(
        simulator=sim_name, simulator_options=dict(sim_options), seed=seed, device=device, budget=budget,
        num_simulations=num_simulations, chunk_size=chunk_size, store=store, workers=workers, executor=executor,
        gold=gold, gold_reference=gold_reference, posterior=posterior, likelihood=likelihood, ratio=ratio, joint=joint,
        held_out=held_out, obs_file=obs_file,
        num_samples=ev["num_samples"], c2st=c2st, reference_samples=ev["reference_samples"],
        calibration=ev["calibration"], calibration_samples=ev["calibration_samples"],
        emulator_maps=ev["emulator_maps"], spectrum_maps=ev["spectrum_maps"], mcmc_chains=ev["mcmc_chains"],
        mcmc_warmup=ev["mcmc_warmup"], mcmc=mcmc,
        out_dir=out_dir, report=report, save_models=save_models,
        base_dir=str(base_dir), source=source,
    )
    sim = None
    if build_simulator:
        sim = resolve_simulator(sim_name, config.simulator_options, base_dir=base_dir)
        d_theta = int(sim.prior.event_shape[0])
        if gold:
            from .campaign.gold import check_gold_simulator

            try:
                check_gold_simulator(sim)
            except ValueError as e:
                raise ConfigError("simulation.gold", str(e)) from None
        if gold_reference is not None:
            config.gold_reference = _matrix(gold_reference, "simulation.gold_reference", d_theta)
        if "theta" in obs:
            config.theta_obs = _matrix(obs["theta"], "observations.theta", d_theta)
            _check_in_support(sim.prior, config.theta_obs, "observations.theta")
        if "true_theta" in obs:
            config.true_theta = _matrix(obs["true_theta"], "observations.true_theta", d_theta)
        if obs_file is not None:
            path = config.path(obs_file)
            if not path.is_file():
                raise ConfigError("observations.file", f"no file at {path}")
    elif "theta" in obs:
        config.theta_obs = _matrix(obs["theta"], "observations.theta", None)
    if config.theta_obs is None and obs_file is None and held_out == 0:
        raise ConfigError("observations.held_out", "must be >= 1 when neither observations.theta nor "
                          "observations.file is given")
    return config, sim


def _check_in_support(prior: Any, rows: list[list[float]], key: str) -> None:
    import torch

    theta = torch.tensor(rows, dtype=torch.float32)
    try:
        log_p = prior.log_prob(theta)
    except (ValueError, RuntimeError):
        log_p = torch.full((len(rows),), -math.inf)
    bad = ~torch.isfinite(log_p)
    if bad.any():
        raise ConfigError(key, f"θ = {rows[int(bad.nonzero()[0, 0])]} lies outside the prior's support")


def load_config(path: str | Path | None = None, *, build_simulator: bool = True,
                budget: str | None = None) -> tuple[RunConfig, Any]:
    """Read and validate a configuration file (``None``: the embedded default, :data:`DEFAULT_CONFIG`);
    ``budget`` overrides the file's (see :func:`parse_config`).

    Returns:
        ``(config, simulator)``; see :func:`parse_config`.

    Raises:
        ConfigError: a missing or unreadable file, or an invalid configuration (naming the key).
    """
    if path is None:
        return parse_config(DEFAULT_CONFIG, source="embedded default", build_simulator=build_simulator,
                            budget=budget)
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError("(file)", f"cannot read {path}: {e.strerror or e}") from None
    return parse_config(text, source=str(path), base_dir=path.resolve().parent, build_simulator=build_simulator,
                        budget=budget)
