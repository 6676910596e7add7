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
