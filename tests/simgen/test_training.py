import pytest
import torch
from torch import nn

from simgen.training import TrainingConfig, TrainingHistory, split_indices, train


class GaussianMean(nn.Module):
    """y ~ N(w·c, 1): the loss is the negative log-likelihood, minimised at w = 2."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.epochs_seen: list[int] = []

    def loss(self, y, c):
        return 0.5 * ((y - self.w * c) ** 2).mean()

    def on_epoch(self, epoch):
        self.epochs_seen.append(epoch)


def _data(n=400):
    g = torch.Generator().manual_seed(0)
    c = torch.randn(n, 1, generator=g)
    return 2.0 * c + 0.1 * torch.randn(n, 1, generator=g), c


def test_train_fits_and_reports_history():
    model = GaussianMean()
    y, c = _data()
    hooks = []
    history = train(model, y, c, TrainingConfig(max_epochs=40, learning_rate=0.1, batch_size=64),
                    seed=0, progress=False, epoch_hook=hooks.append)
    assert isinstance(history, TrainingHistory)
    assert abs(model.w.item() - 2.0) < 0.05
    assert history.epochs == len(history.train_loss) == len(history.validation_loss) == len(hooks)
    assert model.epochs_seen == hooks == list(range(history.epochs))
    assert history.num_train + history.num_validation == 400
    assert history.best_validation_loss == min(history.validation_loss)
    assert not model.training


def test_validation_index_holds_out_exactly_those_rows():
    """Rows given as ``validation_index`` are never trained on (they follow y = 3c, the rest y = 2c: the fit ends
    at w ≈ 2, not at the 2.125 of all rows) and are the rows the validation loss is measured on."""
    y, c = _data()
    held = torch.arange(0, 400, 8)
    y[held] = 3.0 * c[held]
    model = GaussianMean()
    history = train(model, y, c, TrainingConfig(max_epochs=40, learning_rate=0.1, batch_size=64), seed=0,
                    progress=False, validation_index=held)
    assert abs(model.w.item() - 2.0) < 0.05
    assert history.num_validation == 50 and history.num_train == 350
    with torch.no_grad():
        assert model.loss(y[held], c[held]).item() == pytest.approx(history.best_validation_loss, rel=1e-5)
    for bad, match in ((torch.tensor([1, 1]), "repeated rows"), (torch.tensor([400]), r"must lie in \[0, 400\)"),
                       (torch.arange(400), "between 1 and 399"), (torch.tensor([0.5]), "1-D tensor of row indices")):
        with pytest.raises(ValueError, match=match):
            train(GaussianMean(), y, c, TrainingConfig(max_epochs=1), progress=False, validation_index=bad)


def test_best_state_is_restored():
    model = GaussianMean()
    y, c = _data()
    # A huge learning rate makes later epochs worse; the best epoch's weights must come back.
    history = train(model, y, c, TrainingConfig(max_epochs=30, learning_rate=3.0, lr_schedule="constant",
                                                patience=30, clip_grad_norm=None), seed=0, progress=False)
    with torch.no_grad():
        idx = split_indices(400, 0.1, torch.Generator().manual_seed(0))[1]
        val = model.loss(y[idx], c[idx]).item()
    assert val == pytest.approx(history.best_validation_loss, rel=1e-5)


class NoisyGaussianMean(GaussianMean):
    """GaussianMean whose loss adds noise drawn from the global random stream, as a stochastic objective does."""

    def loss(self, y, c):
        return super().loss(y + 0.1 * torch.randn_like(y), c)


def test_an_initial_state_better_than_every_epoch_is_returned(tmp_path):
    # validation rows centred far from the training rows: from w = 2 every step towards the training rows' w = 0
    # raises the validation loss, so the initial state is better than every epoch's
    n = 400
    c, y = torch.ones(n, 1), torch.zeros(n, 1)
    y[split_indices(n, 0.1, torch.Generator().manual_seed(0))[1]] = 3.0

    def run(validate_initial, **kwargs):
        model = GaussianMean()
        with torch.no_grad():
            model.w.fill_(2.0)
        cfg = TrainingConfig(max_epochs=30, learning_rate=0.01, batch_size=64, lr_schedule="constant", patience=5,
                             clip_grad_norm=None, ema_decay=None, validate_initial=validate_initial)
        return model, train(model, y, c, cfg, seed=0, progress=False, **kwargs)

    model, history = run(True)
    _, epochs_only = run(False)
    # training and stopping follow the epochs alone, as without the check; only the final choice differs
    assert history.validation_loss == epochs_only.validation_loss and history.epochs == epochs_only.epochs == 6
    assert (epochs_only.best_epoch, history.best_epoch) == (0, -1) and history.stopped_early
    assert min(history.validation_loss) > history.initial_validation_loss == history.best_validation_loss
    assert model.w.item() == 2.0

    # a run interrupted after the initial validation and resumed from its checkpoint returns the initial state too
    def interrupt_at_3(epoch):
        if epoch == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(True, checkpoint=tmp_path / "a.ckpt", epoch_hook=interrupt_at_3)
    resumed, again = run(True, checkpoint=tmp_path / "a.ckpt")
    assert again.best_epoch == -1 and again.validation_loss == history.validation_loss
    assert resumed.w.item() == model.w.item()


def test_validating_the_initial_state_leaves_the_steps_of_a_run_unchanged():
    # the initial pass draws from the global stream too: the run must take the same steps with and without it
    y, c = _data()
    weights, histories = [], []
    for validate_initial in (True, False):
        model = NoisyGaussianMean()
        cfg = TrainingConfig(max_epochs=8, learning_rate=0.1, batch_size=64, validate_initial=validate_initial)
        histories.append(train(model, y, c, cfg, seed=0, progress=False))
        weights.append(model.w.item())
    on, off = histories
    assert weights[0] == weights[1] and on.validation_loss == off.validation_loss and on.best_epoch >= 0
    assert on.initial_validation_loss > on.best_validation_loss and off.initial_validation_loss is None


@pytest.mark.parametrize("restart", [True, False])
def test_restart_on_decay_goes_back_to_the_best_state(restart):
    # a learning rate too large for the problem: the plateau schedule lowers it after stale epochs; with
    # restart_on_decay each lowering restarts from the best weights so far
    y, c = _data()
    model, starts = GaussianMean(), []

    def record(epoch):
        starts.append(model.w.item())   # the weights at the end of the previous epoch

    cfg = TrainingConfig(max_epochs=40, learning_rate=2.5, batch_size=64, patience=6, clip_grad_norm=None,
                         ema_decay=None, restart_on_decay=restart)
    history = train(model, y, c, cfg, seed=0, progress=False, epoch_hook=record)
    decays = [e for e in range(1, history.epochs) if history.learning_rate[e] < history.learning_rate[e - 1]]
    assert decays, "the schedule never lowered the learning rate: the check is vacuous"
    restarted, expected = [], []
    for e in decays:   # the rate was lowered after epoch e - 1: epoch e starts from ...
        best = min(range(e), key=lambda k: history.validation_loss[k])
        restarted.append(starts[e] == starts[best + 1] and best != e - 1)
        # ... the best state's weights, once the run has improved on its first epoch
        expected.append(restart and best != e - 1 and best > 0)
    assert restarted == expected
    if restart:
        assert any(restarted), "no restart happened: the check is vacuous"


@pytest.mark.parametrize("validate_initial", [True, False])
def test_restart_on_decay_never_sends_a_run_back_to_its_first_epoch(validate_initial):
    # validation rows centred far from the training rows: from w = 2 the training loss falls towards w = 0
    # while the validation loss rises at every epoch, so the schedule lowers the rate on a run whose best is
    # still its start (the initial state when validated, else the first epoch), and a restart would send it back
    n = 400
    c = torch.ones(n, 1)
    y = torch.zeros(n, 1)
    y[split_indices(n, 0.1, torch.Generator().manual_seed(0))[1]] = 3.0
    model, starts = GaussianMean(), []
    with torch.no_grad():
        model.w.fill_(2.0)
    cfg = TrainingConfig(max_epochs=20, learning_rate=0.01, batch_size=64, patience=20, clip_grad_norm=None,
                         ema_decay=None, restart_on_decay=True, validate_initial=validate_initial)
    history = train(model, y, c, cfg, seed=0, progress=False, epoch_hook=lambda e: starts.append(model.w.item()))
    assert history.best_epoch == (-1 if validate_initial else 0) and history.epochs == 20
    if validate_initial:   # the initial state, w = 2, is what comes back
        assert model.w.item() == 2.0 and history.best_validation_loss == history.initial_validation_loss
    assert min(history.learning_rate) < cfg.learning_rate, "the schedule never lowered the rate: vacuous"
    assert all(b < a for a, b in zip(history.train_loss, history.train_loss[1:], strict=False))
    assert all(b < a for a, b in zip(starts[1:], starts[2:], strict=False)), "a restart sent w back up"


#: a validation loss that dips a little below the first epoch's (by 0.05), rises for eleven epochs, then drops
#: below the first epoch's by 0.5 and stays level
START_SCRIPT = [1.0, 0.95] + [1.5] * 11 + [0.5] + [0.6] * 30


class ScriptedValidation(GaussianMean):
    """GaussianMean whose validation loss (eval mode) follows a script, one value per epoch."""

    def __init__(self, script: list[float]) -> None:
        super().__init__()
        self.script = script

    def loss(self, y, c):
        if self.training:
            return super().loss(y, c)
        return torch.tensor(self.script[min(self.epochs_seen[-1], len(self.script) - 1)])


@pytest.mark.parametrize(("start_patience", "start_margin"), [(None, 0.0), (20, 0.0), (20, 0.1)])
def test_a_run_on_its_start_gets_the_start_patience_and_no_restart(start_patience, start_margin):
    # the dip of START_SCRIPT is within the margin 0.1, its drop beyond it
    y, c = _data()
    model, starts = ScriptedValidation(START_SCRIPT), []
    cfg = TrainingConfig(max_epochs=40, learning_rate=0.01, batch_size=64, patience=6, ema_decay=None,
                         restart_on_decay=True, start_patience=start_patience, start_margin=start_margin)
    history = train(model, y, c, cfg, seed=0, progress=False, epoch_hook=lambda e: starts.append(model.w.item()))
    first_decay = next(e for e in range(1, history.epochs) if history.learning_rate[e] < cfg.learning_rate)
    # starts[e]: the weights epoch e begins from; a restart at the first decay goes back to epoch 1's
    restarted = starts[first_decay] == starts[2]
    if start_patience is None or start_margin == 0:
        # the dip ends the start: patience 6 stops the run on it, the schedule waits 6 // 3 and restarts
        assert (history.best_epoch, history.epochs, first_decay, restarted) == (1, 8, 5, True)
    else:   # the dip is within the margin: it waits 20 (the schedule 20 // 3, no restart) for the drop, then 6
        assert (history.best_epoch, history.epochs, first_decay, restarted) == (13, 20, 9, False)
    assert history.stopped_early


def test_start_patience_resumes_from_a_checkpoint(tmp_path):
    # stopped on its start (after the schedule's first decay), then resumed: as the uninterrupted run
    y, c = _data()
    cfg = TrainingConfig(max_epochs=40, learning_rate=0.01, batch_size=64, patience=6, start_patience=20,
                         start_margin=0.1)
    straight = train(ScriptedValidation(START_SCRIPT), y, c, cfg, seed=0, progress=False)

    def interrupt_at_10(epoch):
        if epoch == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(ScriptedValidation(START_SCRIPT), y, c, cfg, seed=0, progress=False, checkpoint=tmp_path / "a.ckpt",
              epoch_hook=interrupt_at_10)
    resumed = train(ScriptedValidation(START_SCRIPT), y, c, cfg, seed=0, progress=False,
                    checkpoint=tmp_path / "a.ckpt")
    assert (resumed.epochs, resumed.best_epoch, resumed.learning_rate) == (straight.epochs, straight.best_epoch,
                                                                          straight.learning_rate)
    assert (straight.best_epoch, straight.epochs) == (13, 20)
    for changed in ({"start_patience": 30}, {"start_margin": 0.2}):   # both are part of the run
        with pytest.raises(ValueError, match="another training run"):
            train(ScriptedValidation(START_SCRIPT), y, c, TrainingConfig(**{**cfg.__dict__, **changed}), seed=0,
                  progress=False, checkpoint=tmp_path / "a.ckpt")


def test_early_stopping_and_seeding():
    y, c = _data()
    cfg = TrainingConfig(max_epochs=500, learning_rate=0.05, patience=3, batch_size=32)
    a, b = GaussianMean(), GaussianMean()
    ha = train(a, y, c, cfg, seed=5, progress=False)
    hb = train(b, y, c, cfg, seed=5, progress=False)
    assert ha.stopped_early and ha.epochs < 500
    assert torch.equal(a.w, b.w) and ha.validation_loss == hb.validation_loss


def test_training_config_validation():
    with pytest.raises(ValueError, match="validation_fraction"):
        TrainingConfig(validation_fraction=1.5)
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainingConfig(lr_schedule="exponential")
    with pytest.raises(ValueError, match=">= 1"):
        TrainingConfig(batch_size=0)
    with pytest.raises(ValueError, match="start_patience must be >= 1"):
        TrainingConfig(start_patience=0)
    with pytest.raises(ValueError, match="start_margin must be a finite number >= 0"):
        TrainingConfig(start_margin=-0.1)
    with pytest.raises(ValueError, match="same number of rows"):
        train(GaussianMean(), torch.zeros(5, 1), torch.zeros(4, 1), progress=False)
    with pytest.raises(ValueError, match="at least 2 rows"):
        train(GaussianMean(), torch.zeros(1, 1), torch.zeros(1, 1), progress=False)


def test_diverging_model_raises():
    class Broken(GaussianMean):
        def loss(self, y, c):
            return self.w.sum() * float("nan")

    with pytest.raises(FloatingPointError, match="diverged"):
        train(Broken(), *_data(), TrainingConfig(max_epochs=3), seed=0, progress=False)


def test_importance_weights_and_batch_sources():
    from simgen.training import BatchSource, TensorBatches

    g = torch.Generator().manual_seed(0)
    c = torch.randn(600, 1, generator=g)
    slope = torch.where(c > 0, 3.0, 1.0)  # y = 3c for c > 0, y = c otherwise
    y = slope * c
    config = TrainingConfig(max_epochs=150, patience=150, learning_rate=0.05, ema_decay=None)
    weighted = GaussianMean()
    weights = torch.where(c[:, 0] > 0, 1.0, 0.0)  # weight only the c > 0 rows: the fit must follow them
    train(weighted, y, c, config, seed=0, progress=False, weights=weights)
    assert abs(weighted.w.item() - 3.0) < 0.05

    class Source:  # any object with the BatchSource attributes trains the same way
        def __init__(self):
            self.inner = TensorBatches(y, c, 0.1, torch.Generator().manual_seed(0), torch.device("cpu"))
            self.num_train, self.num_validation = self.inner.num_train, self.inner.num_validation

        def train_batches(self, batch_size, generator):
            return self.inner.train_batches(batch_size, generator)

        def validation_batches(self, batch_size):
            return self.inner.validation_batches(batch_size)

    assert isinstance(Source(), BatchSource)
    streamed = GaussianMean()
    history = train(streamed, Source(), config=config, seed=0, progress=False)
    assert history.num_train == 540 and 1.5 < streamed.w.item() < 2.5  # the unweighted fit sits in between
    with pytest.raises(ValueError, match="BatchSource alone"):
        train(GaussianMean(), Source(), c, config, progress=False)
