"""The HTML report: one self-contained file with its figures embedded."""

import base64
import math
import re

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

import simulators  # noqa: E402
from simgen import diagnostics as D  # noqa: E402
from simgen.report import Report  # noqa: E402
from simgen.training import TrainingHistory  # noqa: E402


class ExactPosterior:
    """The exact gaussian_linear (d = 2) posterior N(x/2, 0.05 I)."""

    def sample_batched(self, n, xs, *, generator=None):
        xs = torch.as_tensor(xs)
        return xs[:, None] / 2 + math.sqrt(0.05) * torch.randn(xs.shape[0], n, 2, generator=generator)

    def sample(self, n, x, *, generator=None):
        return self.sample_batched(n, torch.as_tensor(x).reshape(1, 2), generator=generator)[0]

    def log_prob(self, theta, x):
        return torch.distributions.Normal(torch.as_tensor(x) / 2, math.sqrt(0.05)).log_prob(theta).sum(-1)


class SimulatorAsEmulator:
    def __init__(self, simulator):
        self.simulator = simulator

    def sample_batched(self, n, thetas, *, generator=None):
        thetas = torch.as_tensor(thetas)
        x = self.simulator(thetas.repeat_interleave(n, dim=0), generator=generator)
        return x.reshape(thetas.shape[0], n, *self.simulator.x_shape)


def _images(text):
    return re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)


def test_report_with_every_section_is_one_self_contained_file(tmp_path):
    sim = simulators.get("gaussian_linear", dim=2)
    g = torch.Generator().manual_seed(0)
    theta = math.sqrt(0.1) * torch.randn(100, 2, generator=g)
    x = sim(theta, generator=g)
    post = ExactPosterior()
    open_before = set(plt.get_fignums())
    history = TrainingHistory(train_loss=[2.0, 1.0, 0.9], validation_loss=[2.1, 1.1, 1.0],
                              learning_rate=[1e-3] * 3, best_epoch=2, epochs=3, wall_time=1.5, num_train=90)

    report = Report("gaussian_linear <NPE>", subtitle="config: run.toml")
    report.add_text("A test run.\n\nSecond paragraph with <b>markup</b> & symbols.")
    report.add_data(theta, x, parameter_names=["a", "b"], num_failed=3)
    report.add_training(history)
    report.add_posterior(post.sample(500, x[0]), x_obs=x[0], truth=theta[0], labels=["a", "b"], c2st=0.51)
    report.add_calibration(sbc=D.sbc(post, theta, x, num_samples=50, seed=0),
                           coverage=D.coverage(post, theta, x, num_samples=50, seed=0), labels=["a", "b"])
    report.add_posterior_predictive(D.posterior_predictive(post, sim, x[0], num_samples=200, seed=0))
    report.add_likelihood_comparison(D.compare_likelihood(SimulatorAsEmulator(sim), sim, theta[:1], num_samples=100,
                                                        seed=0, gap=False))
    report.section("Notes").add_table([["seed", 0], ["device", "cpu"]], header=["setting", "value"])
    path = report.write(tmp_path / "out" / "report.html")

    text = path.read_text(encoding="utf-8")
    images = _images(text)
    # data (1), training (1), posterior (1), calibration (2), predictive (1), emulator (1)
    assert len(images) == report.num_figures == 7
    assert all(base64.b64decode(img)[:8] == b"\x89PNG\r\n\x1a\n" for img in images)
    assert not re.search(r'(src|href)="(?!data:|#)', text)  # nothing outside the file
    for title in ("Data", "Training", "Posterior", "Calibration", "Posterior predictive check",
                  "Emulator vs simulator", "Notes"):
        assert f"<h2>{title}</h2>" in text
    assert "gaussian_linear &lt;NPE&gt;" in text and "&lt;b&gt;markup&lt;/b&gt; &amp; symbols" in text
    assert "<b>" not in text
    assert text.count('class="ok"') >= 3  # exact posterior: SBC, coverage and predictive all pass
    assert "<td>0.51" not in text and "C2ST against the reference posterior: 0.510" in text
    assert set(plt.get_fignums()) == open_before  # embedded figures are closed


def test_report_sections_are_optional_and_inputs_checked(tmp_path):
    report = Report("empty")
    path = report.write(tmp_path / "r.html")
    assert "<h1>empty</h1>" in path.read_text() and not _images(path.read_text())

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    report.section("One").add_figure(fig, "a line", close=False).add_table({"C2ST": 0.512345, "n": 10})
    text = report.html()
    assert len(_images(text)) == 1 and "<figcaption>a line</figcaption>" in text and plt.fignum_exists(fig.number)
    assert "<td>0.5123</td>" in text and "<td>10</td>" in text
    png = tmp_path / "line.png"
    fig.savefig(png)
    plt.close(fig)
    report.add_png(png, "saved earlier")
    images = _images(report.html())
    assert len(images) == 2 and base64.b64decode(images[1]) == png.read_bytes()
    with pytest.raises(ValueError, match="not a PNG"):
        report.add_png(b"GIF89a")
    with pytest.raises(ValueError, match="Figure"):
        report.add_figure("not a figure")
    with pytest.raises(ValueError, match="cells"):
        report.add_table([[1, 2], [3]], header=["a", "b"])
    with pytest.raises(ValueError, match="title"):
        report.section(" ")
    with pytest.raises(ValueError, match="sbc"):
        report.add_calibration()
