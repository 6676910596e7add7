"""Mixed-precision training (``TrainingConfig.precision``): autocast in the training steps only, float32 elsewhere."""

from __future__ import annotations

import textwrap

import pytest
import torch
from torch import nn

import simgen
from simgen.cli import _parser
from simgen.config import ConfigError, parse_config
from simgen.training import TrainingConfig, train
from simgen.training.trainer import _mixed_precision


class LinearGaussian(nn.Module):
    """y ~ N(W c, 1) through an nn.Linear (an op autocast lowers); records the dtype its matmul ran in."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(1, 1, bias=False)
        nn.init.zeros_(self.linear.weight)
        self.dtypes: list[tuple[bool, torch.dtype]] = []

    def loss(self, y, c):
        mean = self.linear(c)
        self.dtypes.append((self.training, mean.dtype))
        return 0.5 * ((y - mean.float()) ** 2).mean()


def _data(n=400):
    g = torch.Generator().manual_seed(0)
    c = torch.randn(n, 1, generator=g)
    return 2.0 * c + 0.1 * torch.randn(n, 1, generator=g), c


def test_precision_is_validated_and_a_number_is_accepted():
    assert TrainingConfig().precision == "32"
    assert TrainingConfig(precision=16).precision == "16"
    assert TrainingConfig(precision="bf16").precision == "bf16"
    with pytest.raises(ValueError, match="precision"):
        TrainingConfig(precision="fp8")


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("16", torch.float16)])
def test_training_steps_run_in_low_precision_and_validation_in_float32(precision, dtype):
    model = LinearGaussian()
    y, c = _data()
    history = train(model, y, c, TrainingConfig(max_epochs=30, learning_rate=0.1, batch_size=64, precision=precision,
                                                    ema_decay=None),  # validate this very module
                    seed=0, progress=False)
    assert {d for training, d in model.dtypes if training} == {dtype}
    assert {d for training, d in model.dtypes if not training} == {torch.float32}
    assert model.linear.weight.dtype == torch.float32  # the weights (and AdamW's state) stay float32
    # W = 2 to within the low-precision matmul's rounding (bf16: 8 mantissa bits, ~0.4 % of 2)
    assert abs(model.linear.weight.item() - 2.0) < 0.05
    assert all(torch.isfinite(torch.tensor(history.train_loss)))


def test_float16_scales_the_loss_and_float32_and_bf16_do_not():
    cpu = torch.device("cpu")
    assert _mixed_precision("16", cpu)[1].is_enabled()
    assert not _mixed_precision("bf16", cpu)[1].is_enabled()
    assert not _mixed_precision("32", cpu)[1].is_enabled()


def test_a_flow_trains_in_bf16_and_its_log_prob_is_float32():
    from sbi.utils import BoxUniform

    prior = BoxUniform(torch.zeros(2), torch.ones(2))
    theta, x = simgen.simulate(lambda t: t + 0.1 * torch.randn(t.shape), prior, 1000, seed=0, progress=False)
    posterior = simgen.PosteriorEstimator(prior, "flow")
    history = posterior.fit(theta, x, seed=0, progress=False, max_epochs=5, precision="bf16")
    assert history.epochs == 5
    assert all(torch.isfinite(torch.tensor(history.train_loss + history.validation_loss)))
    assert history.validation_loss[-1] < history.validation_loss[0]  # it learns
    log_prob = posterior.log_prob(theta[:10], x[:1])
    assert log_prob.dtype == torch.float32 and torch.isfinite(log_prob).all()
    assert posterior.sample(20, x[:1]).dtype == torch.float32


def test_precision_from_the_toml_training_table_and_the_command_line(tmp_path):
    config, _ = parse_config(textwrap.dedent("""
        simulator = "two_moons"
        [posterior]
        training = { precision = "bf16", max_epochs = 3 }
    """), base_dir=tmp_path, build_simulator=False)
    assert config.posterior.training["precision"] == "bf16"
    with pytest.raises(ConfigError) as e:
        parse_config('simulator = "two_moons"\n[posterior]\ntraining = { precision = "fp8" }\n', base_dir=tmp_path,
                     build_simulator=False)
    assert e.value.key == "posterior.training" and "precision" in str(e.value)
    args = _parser().parse_args(["train", "--store", "s.h5", "--out", "p.pt", "--precision", "bf16"])
    assert args.precision == "bf16"
