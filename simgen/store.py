"""Former home of the campaign store; kept so that ``from simgen.store import ...`` keeps working.

The store lives in :mod:`simgen.campaign.store`, descriptions in :mod:`simgen.campaign.describe` and the
streaming training source in :mod:`simgen.training.data`.
"""

from __future__ import annotations

from .campaign.describe import describe_distribution, describe_simulator
from .campaign.store import STATUS_FAILED, STATUS_VALID, Store, open_store
from .training.data import StoreBatches

__all__ = [
    "Store", "StoreBatches", "open_store", "describe_distribution", "describe_simulator", "STATUS_VALID",
    "STATUS_FAILED",
]
