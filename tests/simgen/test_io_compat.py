"""Model files written by the pre-redesign simgen (tests/fixtures/models_v0/, made by
tests/fixtures/make_v0_models.py) still load, and give the log-probabilities they gave when they were saved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import simgen

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "models_v0"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
#: exact densities (flow, VAE) reproduce to float32 rounding. The ODE families' log_prob is an adaptive dopri5
#: solve (rtol = atol = 1e-5) whose step sequence moves with float rounding on another machine or torch build;
#: the files' own code gives the same differences here (checked on the pre-redesign commit e6671c3), and wrong
#: weights would be off by whole nats, not by these.
ODE_ATOL = {"posterior_cnf": 2e-4, "posterior_diffusion": 5e-3}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_v0_model_loads_with_its_log_prob(name: str) -> None:
    est = simgen.load(FIXTURES / f"{name}.pt", device="cpu")
    assert est.direction == name.split("_")[0]
    case = EXPECTED[name]
    y, c = torch.tensor(case["y"]), torch.tensor(case["c"])
    # the same call, with the same seeded generator, as when the file was written
    lp = est.log_prob(y, c, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(lp, torch.tensor(case["log_prob"]), rtol=1e-5, atol=ODE_ATOL.get(name, 1e-5))


def test_every_fixture_file_is_checked() -> None:
    assert {p.stem for p in FIXTURES.glob("*.pt")} == set(EXPECTED)
