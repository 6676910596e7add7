import json
import sys
import textwrap

import numpy as np
import pytest
import torch

import simgen
from simgen.cli import main
from simgen.config import BUDGETS


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """`simgen run --budget tiny`: the embedded cosmology pipeline, shared by the tests below."""
    out = tmp_path_factory.mktemp("run") / "out"
    code = main(["run", "--budget", "tiny", "--out", str(out), "--threads", "1", "--quiet"])
    return code, out


def test_run_tiny_writes_report_with_corner_coverage_and_emulator_figures(default_run):
    code, out = default_run
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["simulator"] == "cosmology_maps" and summary["budget"] == "tiny"
    results = summary["observations_results"]
    assert len(results) == 2 and all(0.0 <= r["posterior_c2st"] <= 1.0 for r in results)
    assert 0.0 <= summary["mean_c2st"] <= 1.0
    figures = {f["path"]: f for f in summary["figures"]}
    for name in ("corner_posterior_0", "coverage", "sbc_ranks", "emulator_maps", "emulator_power_spectra_0",
                 "emulator_peak_counts"):
        path = f"figures/{name}.png"
        assert path in figures and (out / path).stat().st_size > 1000
    html = (out / "report.html").read_text()
    for caption in ("against the reference posterior", "expected coverage", "simulated (top) and emulated",
                    "binned power spectra"):
        assert caption in html
    assert html.count("<img") >= len(figures)  # every figure embedded (plus data and training)
    for name in ("posterior.pt", "emulator.pt", "samples.pt"):
        assert (out / name).is_file()
    assert simgen.open_store(out / "store.h5").num_valid == summary["num_simulations"]
    assert summary["calibration"]["coverage"]["levels"][-1] == 1.0
    assert summary["emulator"]["spectrum_maps"] == BUDGETS["tiny"]["spectrum_maps"]
    # the embedded configuration's model = "auto" says what it built, in the summary and in the report
    assert summary["posterior_model"].startswith("flow (model = \"auto\"")
    assert summary["emulator_model"].startswith("mapflow (model = \"auto\": x is a map")
    assert "mapflow (model = &quot;auto&quot;: x is a map" in html  # the report escapes the quotes


def test_run_says_what_it_expects_and_where_everything_went(tmp_path, capsys):
    config = tmp_path / "gl.toml"
    config.write_text(textwrap.dedent("""
        budget = "tiny"
        seed = 1
        [simulator]
        name = "gaussian_linear"
        options = { dim = 2 }
        [posterior]
        num_emulated = 300
        [emulator]
        model = "flow"
        mcmc = true
        [observations]
        theta = [[0.2, -0.3]]
        [evaluation]
        calibration = 0
        mcmc = { proposal = "posterior" }
        [output]
        dir = "results"
    """))
    assert main(["run", str(config), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "expect up to about" in printed and "gaussian_linear" in printed
    out = tmp_path / "results"
    for name in ("report.html", "summary.json", "posterior.pt", "emulator.pt", "store.h5"):
        assert str(out / name) in printed and (out / name).exists()
    summary = json.loads((out / "summary.json").read_text())
    row = summary["observations_results"][0]
    assert row["theta_true"] == [0.2, -0.3]
    assert 0.0 <= row["posterior_c2st"] <= 1.0 and 0.0 <= row["emulator_mcmc_c2st"] <= 1.0  # 200 draws: noisy
    assert "proposal draws" in row["emulator_mcmc_run"]  # the chains started from the run's posterior
    # the emulator was fitted first, and the posterior trained on 300 pairs drawn from it too
    assert "and 300 emulated pairs" in printed and simgen.load(out / "posterior.pt").num_emulated == 300
    posterior = tmp_path / "p2.pt"
    train = ["train", "--store", str(out / "store.h5"), "--direction", "posterior", "--out", str(posterior),
             "--max-epochs", "2", "--quiet"]
    assert main([*train, "--emulator", str(out / "emulator.pt"), "--num-emulated", "200"]) == 0
    assert simgen.load(posterior).num_emulated == 200
    assert main([*train, "--num-emulated", "200", "--out", str(tmp_path / "p3.pt")]) == 0  # fits its own emulator
    assert simgen.load(tmp_path / "p3.pt").num_emulated == 200
    assert main([*train, "--num-emulated", "200", "--sample-with", "importance", "--out", str(tmp_path / "p4.pt")]) == 0
    sampler = simgen.load(tmp_path / "p4.pt")  # samples its emulator's posterior, which its file keeps
    assert sampler.sample_with == "importance" and isinstance(sampler.emulator, simgen.LikelihoodEstimator)
    assert main([*train, "--num-emulated", "0", "--sample-with", "importance"]) == 2  # no emulator to sample
    assert main([*train, "--direction", "likelihood", "--sample-with", "direct"]) == 2
    assert main([*train, "--num-emulated", "0", "--emulator", str(out / "emulator.pt")]) == 2  # none, or from it?
    assert main([*train, "--emulator", str(out / "posterior.pt")]) == 2  # not an emulator
    assert main([*train, "--direction", "likelihood", "--emulator", str(out / "emulator.pt")]) == 2
    assert "calibration" not in summary and "emulator" in summary


def test_run_config_with_a_user_callable(tmp_path, monkeypatch):
    (tmp_path / "cli_user_model.py").write_text(textwrap.dedent("""
        import torch
        from torch.distributions import Independent, Uniform

        class Pendulum:
            x_shape = (3,)
            def __init__(self, noise):
                self.noise = noise
                self.prior = Independent(Uniform(torch.zeros(2), torch.ones(2)), 1)
            def __call__(self, theta, generator=None):
                eps = torch.randn(theta.shape[0], 3, generator=generator)
                mean = torch.stack([theta[:, 0], theta[:, 1], theta[:, 0] * theta[:, 1]], 1)
                return mean + self.noise * eps

        def make_simulator(noise=0.1):
            return Pendulum(noise)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    np.save(tmp_path / "obs.npy", np.array([[0.5, 0.4, 0.2]], dtype=np.float32))
    config = tmp_path / "user.toml"
    config.write_text(textwrap.dedent("""
        budget = "tiny"
        [simulator]
        name = "cli_user_model:make_simulator"
        options = { noise = 0.05 }
        [observations]
        file = "obs.npy"
        [output]
        dir = "out"
    """))
    assert main(["run", str(config), "--threads", "1", "--quiet"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    row = summary["observations_results"][0]
    assert "posterior_c2st" not in row  # no reference posterior for a user's simulator
    assert all(0.0 <= m <= 1.0 for m in row["posterior_mean"])
    assert (tmp_path / "out" / "report.html").is_file() and (tmp_path / "out" / "figures" / "coverage.png").is_file()


def test_a_bad_config_is_refused_before_simulating(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text('simulator = "two_moons"\n[posterior]\nmodel = "gan"\n[output]\ndir = "out"\n')
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err
    assert "posterior.model" in err and "'flow'" in err and "'diffusion'" in err
    assert not (tmp_path / "out").exists()


def test_init_writes_a_valid_example_and_refuses_to_overwrite(tmp_path, capsys):
    from simgen.config import load_config

    path = tmp_path / "simgen.toml"
    assert main(["init", str(path)]) == 0
    config, _ = load_config(path)
    assert config.simulator == "two_moons"
    assert main(["init", str(path)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["init", str(path), "--force", "--quiet"]) == 0


@pytest.mark.parametrize("command", [[], ["run"], ["init"], ["simulate"], ["train"], ["sample"], ["evaluate"],
                                     ["report"]])
def test_help_everywhere(command, capsys):
    assert main([*command, "--help"]) == 0
    assert "usage: simgen" in capsys.readouterr().out


def test_usage_errors_exit_with_2(capsys):
    assert main(["fly"]) == 2
    assert main(["run", "--num-simulations", "3"]) == 2
    assert main(["run", "--budget", "huge"]) == 2
    assert main(["simulate", "--num", "10", "--store", "s"]) == 2  # no simulator
    assert main(["simulate", "--simulator", "nope", "--num", "10", "--store", "s"]) == 2
    assert "--simulator" in capsys.readouterr().err


def test_train_sample_evaluate_and_report_on_the_run(default_run, tmp_path, capsys):
    _, out = default_run
    model = tmp_path / "post.pt"
    assert main(["train", "--store", str(out / "store.h5"), "--out", str(model), "--embedding", "power_spectrum",
                 "--max-epochs", "2", "--threads", "1", "--quiet"]) == 0
    x = simgen.open_store(out / "store.h5").load()[1][:2]
    np.save(tmp_path / "x.npy", x.numpy())
    samples = tmp_path / "s.npy"
    assert main(["sample", "--model", str(model), "--x", str(tmp_path / "x.npy"), "--num", "50", "--out",
                 str(samples), "--quiet"]) == 0
    draws = np.load(samples)
    assert draws.shape == (2, 50, 3)
    assert main(["sample", "--model", str(out / "emulator.pt"), "--theta", "[[0.3, 0.8, -1.0]]", "--num", "4",
                 "--out", str(tmp_path / "maps.pt"), "--quiet"]) == 0
    assert torch.load(tmp_path / "maps.pt").shape == (1, 4, 32, 32)
    assert main(["sample", "--model", str(model), "--num", "5", "--out", str(samples)]) == 2  # no --x
    assert main(["sample", "--model", str(tmp_path / "none.pt"), "--x", "[1]", "--out", str(samples)]) == 1
    evaluation = tmp_path / "eval"
    assert main(["evaluate", "--model", str(model), "--simulator", "cosmology_maps", "--num-observations", "1",
                 "--num-samples", "100", "--calibration", "10", "--out", str(evaluation), "--threads", "1",
                 "--quiet"]) == 0
    result = json.loads((evaluation / "evaluation.json").read_text())
    assert 0.0 <= result["mean_c2st"] <= 1.0 and (evaluation / "report.html").is_file()
    assert main(["evaluate", "--model", str(out / "emulator.pt"), "--simulator", "cosmology_maps",
                 "--num-observations", "1", "--num-samples", "20", "--spectrum-maps", "50", "--out",
                 str(tmp_path / "eval_emulator"), "--threads", "1", "--quiet"]) == 0
    result = json.loads((tmp_path / "eval_emulator" / "evaluation.json").read_text())
    assert result["emulator"]["spectrum_maps"] == 50
    assert main(["evaluate", "--model", str(out / "emulator.pt"), "--simulator", "cosmology_maps",
                 "--spectrum-maps", "0", "--quiet"]) == 2
    assert "--spectrum-maps must be at least 1" in capsys.readouterr().err
    (out / "report.html").unlink()
    assert main(["report", str(out), "--quiet"]) == 0
    assert (out / "report.html").read_text().count("<img") >= len(json.loads((out / "summary.json").read_text())
                                                                   ["figures"])
    assert main(["report", str(tmp_path / "empty")]) == 2


def test_simulate_writes_a_store_resumes_and_summarises_failures(tmp_path, capsys):
    store = tmp_path / "runs.h5"
    args = ["simulate", "--simulator", "gaussian_linear", "--option", "dim=3", "--num", "250", "--seed", "2",
            "--store", str(store), "--chunk-size", "100", "--quiet"]
    assert main(args) == 0
    opened = simgen.open_store(store)
    assert len(opened) == 250 and opened.x.shape == (250, 3)
    assert opened.metadata["simulator"]["options"] == {"name": "gaussian_linear", "dim": 3}
    assert main([a if a != "250" else "300" for a in args[:-1]]) == 0  # extends the store and reports
    out = capsys.readouterr().out
    assert f"store {store}: 300 simulations, 300 valid, 0 failed" in out
    assert main(["simulate", "--simulator", "gaussian_linear", "--option", "dim=4", "--num", "250",
                 "--store", str(store), "--chunk-size", "100"]) == 1  # another campaign: a clear error
    assert "different campaign" in capsys.readouterr().err
    assert main(["simulate", "--simulator", "two_moons", "--num", "10", "--store", "s", "--workers", "2",
                 "--dask", "local"]) == 2


def test_simulate_takes_a_config(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('seed = 5\n[simulator]\nname = "gaussian_linear"\noptions = { dim = 2 }\n'
                      '[simulation]\nnum_simulations = 120\nchunk_size = 50\n[output]\ndir = "o"\n')
    assert main(["simulate", "--config", str(config), "--quiet"]) == 0
    store = simgen.open_store(tmp_path / "o" / "store.h5")
    assert len(store) == 120 and store.metadata["seed"] == 5 and store.chunk_size == 50
    assert main(["simulate", "--config", str(config), "--simulator", "two_moons"]) == 2


def test_simulate_summarises_failures_of_an_external_program(tmp_path, capsys):
    program = tmp_path / "sim.py"
    program.write_text("import json, sys\nt = json.load(sys.stdin)['theta']\n"
                       "if any(a > 0.5 for a, b in t): sys.exit('diverged')\n"
                       "print(json.dumps([[a, b] for a, b in t]))\n")
    command = json.dumps([sys.executable, str(program)])
    code = main(["simulate", "--simulator", "external", "--option", f"command={command}", "--option",
                 'prior={"low": [0, 0], "high": [1, 1]}', "--num", "8", "--chunk-size", "8", "--store",
                 str(tmp_path / "runs.h5")])
    assert code == 0
    out = capsys.readouterr().out
    assert "8 simulations" in out and "ExternalSimulatorError" in out and "diverged" in out


def test_train_log_theta_and_validate_initial_from_the_command_line(tmp_path):
    store = tmp_path / "collider.h5"  # the collider's prior is positive in all three dimensions
    assert main(["simulate", "--simulator", "collider", "--option", "level=parton_smeared", "--num", "200",
                 "--store", str(store), "--quiet"]) == 0
    args = ["train", "--store", str(store), "--direction", "likelihood", "--max-epochs", "1", "--threads", "1",
            "--quiet"]
    for flag, dims in ((None, (0, 1, 2)), ("false", ()), ("0,2", (0, 2))):
        out = tmp_path / f"{flag}.pt"
        assert main([*args, "--out", str(out), *(["--log-theta", flag] if flag else ["--model", "auto"])]) == 0
        emu = simgen.load(out)
        assert emu.log_theta == dims
        assert emu.choice is not None and emu.choice.model == "flow"  # model "auto", the default, said it
        if dims:  # streamed from the store: the context statistics are those of log θ
            theta = simgen.open_store(store).theta
            logged = torch.zeros(3, dtype=torch.bool)
            logged[list(dims)] = True
            expected = torch.where(logged, theta.log(), theta).mean(0)
            torch.testing.assert_close(emu.density.c_standardize.loc.reshape(-1), expected, atol=1e-4, rtol=1e-4)
    for flag, validated in (("--validate-initial", True), ("--no-validate-initial", False)):
        out = tmp_path / f"{flag}.pt"
        assert main([*args, "--out", str(out), flag]) == 0
        assert (simgen.load(out).history.initial_validation_loss is not None) == validated
    assert main([*args, "--out", str(tmp_path / "x.pt"), "--log-theta", "yes"]) == 2
    assert main([*args[:4], "--out", str(tmp_path / "x.pt"), "--direction", "posterior", "--log-theta", "0"]) == 2


def test_run_draws_autos_emulated_pairs_from_the_runs_emulator(tmp_path, capsys):
    """``[posterior]`` and ``[likelihood]`` both on ``"auto"`` with 10³ vector simulations: the posterior's emulated
    pairs (3 per simulation) come from the run's emulator, fitted first, not from a second emulator."""
    config = tmp_path / "tm.toml"
    config.write_text(textwrap.dedent("""
        budget = "tiny"
        [simulator]
        name = "two_moons"
        [simulation]
        num_simulations = 1000
        [likelihood]
        [observations]
        held_out = 1
        [evaluation]
        calibration = 0
        [output]
        dir = "results"
    """))
    assert main(["run", str(config), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "results" / "summary.json").read_text())
    assert "1000 simulated and 3000 emulated" in summary["posterior_model"], summary["posterior_model"]
    assert printed.index("fitting the emulator") < printed.index("fitting the posterior")
    assert "and 3000 emulated pairs" in printed and "an emulator it fitted first" not in printed
    loaded = simgen.load(tmp_path / "results" / "posterior.pt")
    assert loaded.num_emulated == 3000
    # both held out the same 100 simulations, on which sample_with = "auto" compared the two posteriors
    assert summary["posterior_held_out"]["rows"] == 100 and loaded.held_out.rows == 100
    assert summary["posterior_sample_with"] == loaded.sample_with
    assert (loaded.emulator is not None) == (loaded.sample_with == "importance")
    assert "posterior samples " in printed and "importance − direct" in printed
