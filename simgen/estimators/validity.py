"""The classifier P(valid | θ) of a likelihood emulator fitted from a campaign store.

The emulator only sees valid simulations, so it models p(x | θ, valid); the simulator's likelihood of a valid
observation is P(valid | θ) p(x | θ, valid) (see :meth:`simgen.estimators.LikelihoodEstimator.posterior`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .. import nets
from ..training import TrainingConfig, train
from ..transforms import Standardize

__all__ = ["ValidityClassifier", "fit_validity"]


class ValidityClassifier(nn.Module):
    """P(valid | θ): a small MLP on standardised θ, trained by binary cross-entropy with the shared trainer.

    ``always_valid`` (no failure in the training rows) makes ``log_prob_valid`` exactly 0.
    """

    def __init__(self, theta_features: int, hidden_features: int = 64, num_layers: int = 2) -> None:
        super().__init__()
        self._settings = {"theta_features": theta_features, "hidden_features": hidden_features,
                        "num_layers": num_layers}
        self.standardize = Standardize((theta_features,))
        self.net = nets.MLP(theta_features, 1, hidden_features, num_layers)
        self.register_buffer("always_valid", torch.tensor(False))

    def config(self) -> dict[str, Any]:
        return dict(self._settings)

    def logits(self, theta: Tensor) -> Tensor:
        return self.net(self.standardize(theta)).squeeze(-1)

    def loss(self, y: Tensor, c: Tensor | None) -> Tensor:
        """Binary cross-entropy of labels ``y`` ``[n, 1]`` (1 valid) given θ ``c``."""
        return F.binary_cross_entropy_with_logits(self.logits(c), y.reshape(-1))

    @torch.no_grad()
    def log_prob_valid(self, theta: Tensor) -> Tensor:
        """log P(valid | θ) ``[n]`` on θ's device."""
        if bool(self.always_valid):
            return torch.zeros(theta.shape[0], device=theta.device)
        device = self.always_valid.device
        return F.logsigmoid(self.logits(theta.to(device).float())).to(theta.device)


def fit_validity(
    theta: Tensor, valid: Tensor, *, seed: int | None = None, device: Any = None, progress: bool = False
) -> ValidityClassifier:
    """Fit :class:`ValidityClassifier` on θ ``[n, d]`` and validity ``[n]`` (all rows of a store)."""
    clf = ValidityClassifier(theta.shape[1])
    if bool(valid.all()):
        clf.always_valid.fill_(True)
        return clf.eval().to(device or "cpu")
    clf.standardize.fit(theta)
    labels = valid.float()[:, None]
    config = TrainingConfig(max_epochs=200, patience=10, learning_rate=3e-3)
    train(clf, labels, theta.float(), config, seed=seed, device=device, progress=progress)
    return clf.eval()
