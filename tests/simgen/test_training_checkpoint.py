"""Checkpoint/resume of training: a run killed mid-epoch and started again ends as the uninterrupted run."""

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from simgen.training import TrainingConfig, train
from simgen.training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]

# the same rows in the killed subprocess and here: θ ~ U(0, 1)², x = θ + noise
DATA = """
import torch
from torch.distributions import Independent, Uniform
prior = Independent(Uniform(torch.zeros(2), torch.ones(2)), 1)
g = torch.Generator().manual_seed(0)
theta = torch.rand(800, 2, generator=g)
x = theta + 0.1 * torch.randn(800, 2, generator=g)
SETTINGS = dict(seed=3, max_epochs=5, batch_size=48, patience=5, progress=False)
"""


def _fit(checkpoint=None):
    from simgen import PosteriorEstimator

    scope: dict = {}
    exec(DATA, scope)
    est = PosteriorEstimator(scope["prior"], device="cpu")
    est.fit(scope["theta"], scope["x"], checkpoint=checkpoint, **scope["SETTINGS"])
    return est


def test_killed_training_resumes_to_the_uninterrupted_result(tmp_path):
    ckpt = tmp_path / "fit.ckpt"
    # The subprocess trains with a checkpoint, each step slowed down so that the kill lands mid-epoch.
    script = tmp_path / "run.py"
    script.write_text(DATA + textwrap.dedent(f"""
        import time
        from simgen import PosteriorEstimator
        from simgen.training import data

        slow = data.TensorBatches.train_batches
        def train_batches(self, *args):
            for batch in slow(self, *args):
                time.sleep(0.01)
                yield batch
        data.TensorBatches.train_batches = train_batches
        PosteriorEstimator(prior, device="cpu").fit(theta, x, checkpoint={str(ckpt)!r}, **SETTINGS)
        print("finished")
    """))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not ckpt.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint written"
            time.sleep(0.02)
        time.sleep(0.05)  # into the next epoch (an epoch is 15 steps of at least 10 ms)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    saved = load_checkpoint(ckpt)
    assert 1 <= saved["epoch"] < 5 and not saved["done"]  # killed before the end
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # atomic: no half-written file kept

    resumed = _fit(ckpt)
    straight = _fit()
    assert resumed.history.epochs == straight.history.epochs == 5
    assert resumed.history.validation_loss == pytest.approx(straight.history.validation_loss, rel=1e-5, abs=1e-6)
    assert resumed.history.best_epoch == straight.history.best_epoch
    for (name, a), b in zip(resumed.density.state_dict().items(), straight.density.state_dict().values(),
                            strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    assert load_checkpoint(ckpt)["done"]


class Line(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def loss(self, y, c):
        return 0.5 * ((y - self.w * c) ** 2).mean()


def _line_data():
    g = torch.Generator().manual_seed(0)
    c = torch.randn(300, 1, generator=g)
    return 2.0 * c + 0.1 * torch.randn(300, 1, generator=g), c


@pytest.mark.parametrize(("schedule", "ema"), [("plateau", 0.98), ("cosine", None), ("constant", 0.9)])
def test_finished_checkpoint_returns_its_result_and_foreign_ones_are_refused(tmp_path, schedule, ema):
    y, c = _line_data()
    cfg = TrainingConfig(max_epochs=5, batch_size=32, learning_rate=0.05, lr_schedule=schedule, ema_decay=ema)
    first = Line()
    h1 = train(first, y, c, cfg, seed=0, progress=False, checkpoint=tmp_path / "a.ckpt")
    plain = Line()
    h0 = train(plain, y, c, cfg, seed=0, progress=False)
    assert torch.equal(first.w, plain.w) and h1.validation_loss == h0.validation_loss  # saving changes nothing
    again = Line()
    h2 = train(again, y, c, cfg, seed=0, progress=False, checkpoint=tmp_path / "a.ckpt")
    assert torch.equal(again.w, first.w) and h2.validation_loss == h1.validation_loss
    # stopped before epoch 3 (the hook raises), then resumed: as the uninterrupted run
    class Stop(Exception):
        pass

    def stop_at_3(epoch):
        if epoch == 3:
            raise Stop

    with pytest.raises(Stop):
        train(Line(), y, c, cfg, seed=0, progress=False, checkpoint=tmp_path / "b.ckpt", epoch_hook=stop_at_3)
    assert load_checkpoint(tmp_path / "b.ckpt")["epoch"] == 3
    resumed = Line()
    h4 = train(resumed, y, c, cfg, seed=0, progress=False, checkpoint=tmp_path / "b.ckpt")
    assert torch.equal(resumed.w, plain.w) and h4.validation_loss == h0.validation_loss
    assert h4.learning_rate == h0.learning_rate
    # without a seed, the checkpoint's is used
    h3 = train(Line(), y, c, cfg, progress=False, checkpoint=tmp_path / "a.ckpt")
    assert h3.validation_loss == h1.validation_loss
    with pytest.raises(ValueError, match="another training run"):
        train(Line(), y, c, TrainingConfig(max_epochs=7, batch_size=32), seed=0, progress=False,
              checkpoint=tmp_path / "a.ckpt")


class Payload:
    def __reduce__(self):
        return (print, ("code ran from the checkpoint",))


def test_loading_a_checkpoint_runs_no_code(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"format": 1, "seed": 0, "payload": Payload()}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(path)
