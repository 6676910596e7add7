"""simgen.utils' generator-aware draws: torch's own draws where the generator and the target device agree (so CPU
results are bit-identical to the calls they replace), moved to the target device where they do not."""

from __future__ import annotations

import pytest
import torch

from simgen import utils


def gen(seed: int = 3, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def test_cpu_draws_are_torchs_own_bit_for_bit():
    assert torch.equal(utils.randn(3, 2, generator=gen()), torch.randn(3, 2, generator=gen()))
    assert torch.equal(utils.randn((3, 2), generator=gen(), dtype=torch.float64),
                       torch.randn(3, 2, generator=gen(), dtype=torch.float64))
    assert torch.equal(utils.rand(torch.Size([5]), generator=gen(), device="cpu"), torch.rand(5, generator=gen()))
    assert torch.equal(utils.randint(0, 2**62, (), generator=gen()), torch.randint(0, 2**62, (), generator=gen()))
    assert torch.equal(utils.randint(0, 2, (4, 3), generator=gen()), torch.randint(0, 2, (4, 3), generator=gen()))
    assert torch.equal(utils.randperm(7, generator=gen()), torch.randperm(7, generator=gen()))
    probs = torch.rand(10, 4, generator=gen(0))
    assert torch.equal(utils.multinomial(probs, 5, True, generator=gen()),
                       torch.multinomial(probs, 5, True, generator=gen()))
    assert torch.equal(utils.bernoulli(probs, generator=gen()), torch.bernoulli(probs, generator=gen()))


def test_without_a_generator_draws_are_made_on_the_target_device():
    assert utils.randn(2, 3, device="cpu").shape == (2, 3)
    assert utils.randint(0, 3, (4,)).dtype == torch.int64
    assert utils.rand(2, dtype=torch.float64).dtype == torch.float64


@pytest.mark.gpu
def test_a_cpu_generator_draws_for_cuda_and_a_cuda_generator_for_the_cpu():
    cuda = torch.device("cuda")
    draws = utils.randn(4, 2, generator=gen(), device=cuda)
    assert draws.device.type == "cuda" and torch.equal(draws.cpu(), torch.randn(4, 2, generator=gen()))
    assert utils.rand(3, generator=gen(device="cuda"), device="cpu").device.type == "cpu"
    assert utils.randint(0, 5, (3,), generator=gen(), device=cuda).device.type == "cuda"
    assert utils.randperm(5, generator=gen(), device=cuda).device.type == "cuda"
    probs = torch.rand(6, 3, device=cuda)
    assert utils.multinomial(probs, 2, generator=gen()).device.type == "cuda"
    assert utils.bernoulli(probs, generator=gen()).device.type == "cuda"
