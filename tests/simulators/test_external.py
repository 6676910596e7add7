import sys
import textwrap
import warnings

import pytest
import torch

import simgen
import simulators
from simulators.external import ExternalSimulator, ExternalSimulatorError

PROGRAM = textwrap.dedent(
    """
    import json, os, random, sys, time
    mode = sys.argv[1]
    if mode == "npy":
        import numpy as np
        theta = np.load(sys.argv[2])
        np.save(sys.argv[3], np.stack([theta.sum(1), theta[:, 0] - theta[:, 1]], 1))
        sys.exit(0)
    request = json.load(sys.stdin)
    rng = random.Random(int(os.environ["SIMGEN_SEED"]))
    rows = []
    for a, b in request["theta"]:
        if mode == "crash" and a > 0.5:
            sys.stderr.write("negative pressure in cell 7\\n")
            sys.exit(3)
        if mode == "garbage" and b > 0.5:
            print("Segmentation fault (core dumped)")
            sys.exit(0)
        if mode == "slow" and a > 0.5:
            time.sleep(30)
        rows.append([a + b + 0.01 * rng.random(), a - b])
    json.dump({"x": rows, "seed": request["seed"]}, sys.stdout)
    """
)


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    path = tmp_path_factory.mktemp("external") / "sim.py"
    path.write_text(PROGRAM)
    return path


def _sim(program, mode, **kwargs):
    return ExternalSimulator([sys.executable, str(program), mode], prior={"low": [-1, -1], "high": [1, 1]},
                             x_shape=(2,), **kwargs)


def test_success_json_over_pipes_and_seeded(program):
    sim = _sim(program, "ok")
    theta = torch.tensor([[0.1, 0.2], [-0.5, 0.3]])
    x = sim(theta, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 2) and x.dtype == torch.float32
    assert torch.allclose(x[:, 1], theta[:, 0] - theta[:, 1]) and torch.allclose(x[:, 0], theta.sum(1), atol=0.011)
    again = sim(theta, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, again)


def test_success_npy_through_files_and_the_registry(program):
    sim = simulators.get("external", command=[sys.executable, str(program), "npy", "{input}", "{output}"],
                         prior={"low": [-1, -1], "high": [1, 1]}, input_format="npy", output_format="npy")
    theta = torch.tensor([[0.1, 0.2], [-0.5, 0.3], [0.0, 0.9]])
    x = sim(theta)
    assert torch.allclose(x, torch.stack([theta.sum(1), theta[:, 0] - theta[:, 1]], 1))


def test_crash_timeout_and_garbage_raise_clear_errors(program):
    bad = torch.tensor([[0.9, 0.9]])
    with pytest.raises(ExternalSimulatorError, match="exited with status 3: negative pressure in cell 7"):
        _sim(program, "crash")(bad)
    with pytest.raises(TimeoutError, match="did not finish within 0.5 s"):
        _sim(program, "slow", timeout=0.5)(bad)
    with pytest.raises(ValueError, match="unreadable json output.*Segmentation fault"):
        _sim(program, "garbage")(bad)
    with pytest.raises(FileNotFoundError, match="no such program"):
        ExternalSimulator(["/nonexistent/simulator"], prior={"low": [0], "high": [1]})(torch.zeros(1, 1))


@pytest.mark.parametrize("mode,error", [("crash", "ExternalSimulatorError"), ("garbage", "ValueError"),
                                        ("slow", "TimeoutError")])
def test_failures_in_a_campaign_are_recorded_row_by_row(program, mode, error, tmp_path):
    sim = _sim(program, mode, timeout=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        store = simgen.simulate(sim, sim.prior, 6, seed=3, chunk_size=6, progress=False, store=tmp_path / "s",
                                return_data=False)
    theta, valid = store.theta, store.valid
    column = 1 if mode == "garbage" else 0
    assert torch.equal(valid, theta[:, column] <= 0.5) and not valid.all() and valid.any()
    assert {f.error for f in store.failures} == {error}
    assert store.metadata["simulator"]["name"] == "external"
