"""``model="auto"``: the family, its size and its training schedule, chosen from the data as the benchmarks measured.

A user who does not know the field should not have to pick among flows, flow matching, diffusion, VAEs and
transformers. :func:`choose` reads what an estimator knows when it fits — its direction, the kind and shape of
y and of the context, the number of training rows, whether x has discrete columns — and returns a
:class:`Choice`: the registered family, its constructor options, training settings on top of the family's own
``training_defaults``, and one line saying why. The rules follow the project's benchmarks (README, "Which family
for which problem"), which also give the figures behind each:

* **likelihood of maps** → the map flow (:class:`~simgen.models.MapFlow`): exact log p, one-pass sampling,
  invariant under shifts on the torus; of every family measured on Gaussian and lognormal fields it is the
  closest to the simulator's exact likelihood, at the smallest training and sampling cost.
* **likelihood of vectors, sets, sequences** → the flow (:class:`~simgen.models.Flow`), with mixed neural
  likelihood estimation (a categorical network over x's discrete columns) when x has any: exact log p, cheap
  gradients for MCMC.
* **posterior** → the flow, on the default embedding of x's kind: on two_moons and slcp at 10³ and 10⁴
  simulations every other family was less accurate; on the Gaussian posteriors of gaussian_linear, where it
  returns its linear-Gaussian start when that is better than every epoch's, it is level with them or ahead; and it
  trains and samples fastest.
* **posterior of a vector x (up to 50 features), 10³ to 2·10⁴ simulations** → the flow also trains on emulated pairs
  (:mod:`~simgen.estimators.augment`): an emulator, the likelihood family ``"auto"`` builds, is fitted on the same
  simulations, and :data:`EMULATED_PER_PAIR` pairs θ ~ p(θ), x ~ emu(x | θ) per simulated pair join the
  simulated ones. At these budgets a flow of p(x | θ) learns more from the simulations than one of p(θ | x) does,
  and the posterior, still amortised, learns from it as from a simulator (Choice.emulated says how many).
* **every budget** measured (10³ and 10⁴ simulations): the same families with their own training defaults; the
  trainer's automatic batch (an eighth of the rows) scales the steps per epoch with the data, and longer
  schedules, larger flows and ensembles of flows did not measure better.

The choice is made once per fit, recorded on the estimator (``est.choice``) and in its saved file, so a loaded
model says what it is; ``model="flow"`` (or any other name) still builds exactly that family.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["AUTO", "EMULATED_BUDGETS", "EMULATED_MAX_FEATURES", "EMULATED_PER_PAIR", "Choice", "choose",
           "emulated_for", "family_for"]

#: the model name that asks for :func:`choose`
AUTO = "auto"

#: emulated pairs per simulated pair that ``"auto"`` adds to a posterior's training data
EMULATED_PER_PAIR = 3

#: the numbers of simulated pairs (inclusive) over which ``"auto"`` adds emulated pairs: from the smaller budget
#: measured (README, "Emulated pairs") to twice the larger
EMULATED_BUDGETS = (1_000, 20_000)

#: the largest x (features of a vector) for which ``"auto"`` adds emulated pairs: the emulator is a flow over x,
#: and this bound keeps to the sizes of x the benchmarks cover, with room (README, "Emulated pairs")
EMULATED_MAX_FEATURES = 50


@dataclass(frozen=True)
class Choice:
    """What ``model="auto"`` built.

    Attributes:
        model: the registered family's name (``simgen.models.MODELS``).
        options: its constructor arguments beyond its defaults.
        training: :class:`~simgen.training.TrainingConfig` settings on top of the family's ``training_defaults``
            (a user's ``fit(..., **settings)`` still overrides both).
        reason: one line saying why, in words.
        emulated: pairs drawn from an emulator that a posterior trained on beside the simulated ones
            (:func:`emulated_for`; 0 for none).
    """

    model: str
    options: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    emulated: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Choice:
        return cls(model=str(data["model"]), options=dict(data.get("options") or {}),
                   training=dict(data.get("training") or {}), reason=str(data.get("reason", "")),
                   emulated=int(data.get("emulated", 0)))  # (absent from files written before it existed)

    def __str__(self) -> str:
        parts = [self.model]
        if self.options:
            parts.append(f"options {self.options}")
        if self.training:
            parts.append(f"training {self.training}")
        if self.emulated:
            parts.append(f"{self.emulated} emulated pairs")
        return f"{', '.join(parts)}: {self.reason}"


def family_for(direction: str, y_kind: str) -> str:
    """The family ``"auto"`` stands for before the data are seen (what an estimator's family-level defaults,
    such as its support map, are read from): the map flow for a likelihood of maps, else the flow; :func:`choose`
    builds the same family once the data are there."""
    if direction == "likelihood" and y_kind == "map":
        return "mapflow"
    return "flow"


def emulated_for(direction: str, *, x_kind: str, num_rows: int, x_features: int = 1, iid: bool = False) -> int:
    """How many emulated pairs ``model="auto"`` trains a posterior on beside ``num_rows`` simulated ones:
    :data:`EMULATED_PER_PAIR` per simulated pair for a posterior of a vector x (not sets of i.i.d. draws) of at
    most :data:`EMULATED_MAX_FEATURES` ``x_features`` at :data:`EMULATED_BUDGETS`, else 0 (a likelihood, maps,
    sets and sequences, sizes and budgets not measured)."""
    low, high = EMULATED_BUDGETS
    if (direction != "posterior" or x_kind != "vector" or iid or not low <= num_rows <= high
            or x_features > EMULATED_MAX_FEATURES):
        return 0
    return EMULATED_PER_PAIR * num_rows


def choose(direction: str, *, y_kind: str, x_kind: str, num_rows: int, discrete: bool = False,
           iid: bool = False, emulated: int = 0) -> Choice:
    """The family, options and training settings ``model="auto"`` builds for this data.

    Args:
        direction: ``"posterior"`` (y = θ, context x) or ``"likelihood"`` (y = x, context θ).
        y_kind: the kind of y (``"vector"``, ``"map"``, ``"set"``, ``"sequence"``).
        x_kind: the kind of x (the context of a posterior, y of a likelihood).
        num_rows: the number of simulated pairs the fit trains on (training and validation rows together).
        discrete: whether x has declared integer-valued columns (a likelihood then uses MNLE).
        iid: whether a posterior is amortised over sets of i.i.d. observations.
        emulated: the emulated pairs a posterior trains on beside the simulated ones (:func:`emulated_for`).

    Raises:
        ValueError: an unknown direction, or fewer than one row.
    """
    if direction not in ("posterior", "likelihood"):
        raise ValueError(f"model='auto' chooses for a 'posterior' or a 'likelihood'; got direction {direction!r}")
    if num_rows < 1:
        raise ValueError(f"model='auto' needs at least one training row; got {num_rows}")
    model = family_for(direction, y_kind)
    if direction == "likelihood":
        if model == "mapflow":
            reason = ("x is a map: the map flow (exact log p, one-pass sampling, invariant under shifts on the "
                      "torus), the most accurate and cheapest map emulator measured")
        elif discrete:
            reason = (f"x is a {x_kind} with discrete columns: a flow over the continuous ones and a categorical "
                      "network over the discrete ones (MNLE), an exact likelihood for MCMC")
        else:
            reason = f"x is a {x_kind}: a neural spline flow, an exact likelihood with cheap gradients for MCMC"
    else:
        what = "sets of i.i.d. observations" if iid else f"a {x_kind} x"
        reason = (f"posterior given {what}: a neural spline flow on the default embedding, the most accurate "
                  "posterior family measured on the sbibm tasks at 10³ and 10⁴ simulations, and the fastest")
    if emulated:
        return Choice(model=model, emulated=emulated,
                      reason=f"{reason}, also trained on pairs from an emulator of x ({num_rows} simulated and "
                             f"{emulated} emulated training pairs)")
    return Choice(model=model, reason=f"{reason} ({num_rows} training pairs)")
