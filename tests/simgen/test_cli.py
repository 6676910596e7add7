import json

import pytest

from simgen.cli import main


def test_run_writes_summary_plot_and_model(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["run", "--num-simulations", "600", "--num-samples", "500", "--max-epochs", "3",
                 "--out", str(out), "--threads", "1"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_simulations"] == 600 and 0.5 <= summary["c2st_vs_exact_posterior"] <= 1.0
    assert (out / "corner.png").stat().st_size > 0 and (out / "posterior.pt").exists()
    assert "C2ST against the exact posterior" in capsys.readouterr().out


def test_usage_errors_exit_with_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["fly"])
    assert e.value.code == 2
    assert main(["run", "--num-simulations", "3"]) == 2


def test_simulate_writes_a_store_resumes_and_summarises_failures(tmp_path, capsys):
    import simgen

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
    with pytest.raises(SystemExit):
        main(["simulate", "--simulator", "two_moons", "--num", "10", "--store", "s", "--workers", "2",
              "--dask", "local"])


def test_simulate_summarises_failures_of_an_external_program(tmp_path, capsys):
    import sys

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
