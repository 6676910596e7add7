"""Checks of posteriors and emulators against references."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .estimators import as_tensor

__all__ = ["c2st"]


def c2st(
    samples: Any,
    reference: Any,
    *,
    seed: int = 1,
    n_folds: int = 5,
    max_iter: int = 1000,
) -> float:
    r"""Classifier two-sample test: cross-validated accuracy of a classifier telling ``samples`` from
    ``reference`` (Lopez-Paz & Oquab 2017, "Revisiting classifier two-sample tests", arXiv:1610.06545).

    Configured as sbibm's (Lueckmann et al. 2021) so numbers compare with the published tables: both sets are
    z-scored with the *reference's* mean and standard deviation, the classifier is scikit-learn's MLP with two
    hidden layers of 10·d ReLU units (Adam), and the score is the mean accuracy over ``n_folds`` shuffled
    folds. 0.5 means indistinguishable, 1.0 perfectly separable.

    Args:
        samples: ``[n, d]`` draws to test.
        reference: ``[m, d]`` draws from the reference distribution.
        seed: seeds the folds and the classifier.

    Returns:
        The accuracy, a float in [0, 1].
    """
    from sklearn.model_selection import KFold, cross_val_score
    from sklearn.neural_network import MLPClassifier

    x, y = as_tensor(samples, "samples"), as_tensor(reference, "reference")
    if x.dim() == 1:
        x = x[:, None]
    if y.dim() == 1:
        y = y[:, None]
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"samples and reference must be [n, d] and [m, d]; got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] < n_folds or y.shape[0] < n_folds:
        raise ValueError(f"c2st needs at least n_folds={n_folds} rows in each set; got {x.shape[0]} and {y.shape[0]}")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise ValueError("samples and reference must be finite")
    mean, std = y.mean(dim=0), y.std(dim=0).clamp_min(1e-12)
    data = torch.cat([(x - mean) / std, (y - mean) / std]).double().numpy()
    target = np.concatenate([np.zeros(x.shape[0]), np.ones(y.shape[0])])
    d = data.shape[1]
    classifier = MLPClassifier(
        activation="relu", hidden_layer_sizes=(10 * d, 10 * d), max_iter=max_iter, solver="adam", random_state=seed
    )
    folds = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return float(np.mean(cross_val_score(classifier, data, target, cv=folds, scoring="accuracy")))
