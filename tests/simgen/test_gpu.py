"""simgen on a CUDA GPU (marker ``gpu``: skipped where torch sees no GPU; ``python -m pytest -m gpu`` runs only these).

- the model contract (``test_contract.py``: shapes, determinism under ``generator=``, save/load, bad input) for
  every family × direction × data kind, each case trained for two epochs on CUDA;
- a user's CPU ``torch.Generator`` with a model on CUDA: draws are made on the generator's device and moved
  (``simgen.utils.randn`` & co.), so the same seed gives the same draws as the same model on the CPU, up to
  floating-point differences of the two devices' kernels;
- MCMC through a CUDA emulator and the diagnostics on a CUDA posterior, with CPU and CUDA generators.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
import test_contract as contract  # tests/simgen is on sys.path (pytest's rootdir-relative imports)
import torch

import simgen
from simgen import diagnostics

pytestmark = pytest.mark.gpu
CUDA = "cuda"


class CudaCase(contract.Case):
    """A contract case whose estimator is built and trained on CUDA."""

    def new_estimator(self) -> Any:
        return contract.DIRECTIONS[self.direction](contract.PRIOR, contract.make_family(self.family),
                                                   x_kind=self.x_kind, device=CUDA)


@functools.cache
def cuda_fitted(family: str, direction: str, kind: str) -> CudaCase:
    return CudaCase(family, direction, kind)


@pytest.fixture(scope="module", params=contract.CASES)
def case(request: pytest.FixtureRequest) -> CudaCase:
    return cuda_fitted(*request.param)


# the contract's checks, collected here again with this module's CUDA ``case``
test_contract_shapes = contract.test_shapes
test_contract_determinism = contract.test_same_generator_seed_gives_the_same_draws_and_log_prob
test_contract_rows_independent = contract.test_a_rows_log_prob_does_not_depend_on_the_rest_of_its_batch
test_contract_save_load = contract.test_save_load_round_trip
test_contract_bad_input = contract.test_bad_input_raises_a_value_error_that_names_the_argument


def gen(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


@pytest.mark.parametrize("direction", list(contract.DIRECTIONS))
@pytest.mark.parametrize("family", list(contract.REGISTRY))
def test_a_cpu_generator_gives_a_cuda_model_the_cpu_models_draws(family: str, direction: str, tmp_path: Any):
    case = next((c for c in (contract.fitted(family, direction, kind) for kind in (*contract.TWO_D, "map-hw"))
                 if c.refused is None), None)
    if case is None:
        pytest.skip(f"{family} models no data of these kinds")
    path = tmp_path / "model.pt"
    case.est.save(str(path))
    on_cpu, on_cuda = simgen.load(str(path), device="cpu"), simgen.load(str(path), device=CUDA)
    assert next(on_cuda.density.parameters()).device.type == "cuda"
    c = case.c[:3]
    cpu_draws = on_cpu.sample_batched(16, c, generator=gen(7))
    cuda_draws = on_cuda.sample_batched(16, c, generator=gen(7))  # a CPU generator, a model on CUDA
    torch.testing.assert_close(cuda_draws, cpu_draws, rtol=1e-3, atol=1e-3)
    assert on_cuda.sample(5, c[0], generator=gen(1, CUDA)).shape == (5, *case.y_shape)  # a CUDA generator
    y = case.y[:4]
    torch.testing.assert_close(on_cuda.log_prob(y, case.c[:4], generator=gen(2)),
                               on_cpu.log_prob(y, case.c[:4], generator=gen(2)), rtol=1e-3, atol=1e-2)


@pytest.mark.parametrize("method", ["mala", "hmc", "slice"])
def test_mcmc_through_a_cuda_emulator_with_cpu_and_cuda_generators(method: str):
    case = cuda_fitted("flow", "likelihood", "vector")
    x_obs = case.x[:2]
    post = case.est.posterior(method=method, num_chains=8, warmup=20, progress=False)
    for g in (gen(0), gen(0, CUDA)):
        draws = post.sample(16, x_obs, generator=g)
        assert draws.shape == (16, contract.D_THETA) and torch.isfinite(draws).all()


def test_diagnostics_on_a_cuda_posterior_and_emulator():
    post = cuda_fitted("flow", "posterior", "vector")
    emu = cuda_fitted("vae", "likelihood", "vector")
    theta, x = post.theta[:20], post.x[:20]
    ranks = diagnostics.sbc(post.est, theta, x, num_samples=20, seed=0).ranks
    assert torch.equal(ranks, diagnostics.sbc(post.est, theta, x, num_samples=20, seed=0).ranks)
    assert diagnostics.coverage(post.est, theta, x, num_samples=20, seed=0).hpd is not None
    assert diagnostics.posterior_predictive(post.est, lambda t: contract.simulate("vector", t, gen(0)), x[:1],
                                            num_samples=20, seed=0) is not None

    class Simulator:
        def __call__(self, t: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
            return contract.simulate("vector", t, generator or gen(0))

    assert diagnostics.compare_likelihood(emu.est, Simulator(), theta[:2], num_samples=50, seed=0).c2st.shape == (2,)
