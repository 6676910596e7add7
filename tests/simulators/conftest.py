import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_global_rng():
    """Every test starts from the same global torch RNG state (prior.sample and unseeded calls use it)."""
    torch.manual_seed(0)
