import textwrap

import pytest

from simgen.config import (
    BUDGETS,
    DEFAULT_CONFIG,
    EXAMPLE_CONFIG,
    ConfigError,
    load_config,
    parse_config,
    resolve_simulator,
)


def parse(text, **kw):
    return parse_config(textwrap.dedent(text), **kw)


def test_embedded_default_is_cosmology_maps_with_both_directions():
    config, sim = load_config()
    assert config.simulator == "cosmology_maps" and sim.x_shape == (32, 32)
    assert config.posterior.enabled and config.posterior.embedding == "power_spectrum"
    assert config.likelihood.enabled and config.likelihood.model == "auto"
    assert config.held_out == 3 and config.num_simulations == BUDGETS["default"]["num_simulations"]
    assert "[simulator]" in DEFAULT_CONFIG


def test_example_written_by_init_is_valid():
    config, sim = parse_config(EXAMPLE_CONFIG)
    assert config.simulator == "two_moons" and config.budget == "small"
    assert config.posterior.enabled and not config.emulator.enabled
    assert config.num_simulations == BUDGETS["small"]["num_simulations"]


def test_budget_presets_and_explicit_keys():
    config, _ = parse('simulator = "two_moons"\nbudget = "tiny"\n[simulation]\nnum_simulations = 123\n'
                      '[posterior]\ntraining = { max_epochs = 7, restart_on_decay = true, start_patience = 30, '
                      'start_margin = 0.05, validate_initial = false }\n')
    assert config.num_simulations == 123  # explicit wins
    assert config.posterior.training == {"max_epochs": 7, "restart_on_decay": True, "start_patience": 30,
                                         "start_margin": 0.05, "validate_initial": False,
                                         "max_time": BUDGETS["tiny"]["posterior_time"]}
    assert config.num_samples == BUDGETS["tiny"]["num_samples"]
    assert config.posterior.num_train is None
    subset, _ = parse('simulator = "two_moons"\n[emulator]\nnum_train = 50\n')
    assert subset.emulator.enabled and subset.emulator.num_train == 50 and subset.emulator.model == "auto"
    logs, _ = parse('simulator = "two_moons"\n[likelihood]\nlog_theta = [0]\n')
    assert logs.likelihood.log_theta == [0] and subset.emulator.log_theta is None
    maps, _ = parse('simulator = "cosmology_maps"\n[evaluation]\nspectrum_maps = 2000\n')
    assert maps.spectrum_maps == 2000 and maps.emulator_maps == BUDGETS["default"]["emulator_maps"]
    assert parse('simulator = "two_moons"\n', budget="small")[0].spectrum_maps == BUDGETS["small"]["spectrum_maps"]
    overridden, _ = parse('simulator = "two_moons"\n', budget="tiny")
    assert overridden.budget == "tiny" and overridden.num_simulations == BUDGETS["tiny"]["num_simulations"]


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ('simulator = "two_moons"\nbudgett = "tiny"\n', "budgett", ["allowed keys", "budget"]),
        ('simulator = "two_moons"\nbudget = "huge"\n', "budget", ["'tiny'", "'small'", "'default'"]),
        ('simulator = "no_such_sim"\n', "simulator.name", ["two_moons", "cosmology_maps", "package.module"]),
        ('[simulator]\nname = "cosmology_maps"\noptions = { n_pix = 3 }\n', "simulator.options", ["n_pix"]),
        ('simulator = "two_moons"\n[posterior]\nmodel = "gan"\n', "posterior.model", ["'flow'", "'vae'"]),
        ('simulator = "two_moons"\n[posterior]\nembedding = "cnn"\n', "posterior.embedding", ["'power_spectrum'"]),
        ('simulator = "two_moons"\n[posterior]\ntraining = { epochs = 3 }\n', "posterior.training.epochs",
         ["max_epochs"]),
        ('simulator = "two_moons"\n[posterior]\nmodel = "flow"\noptions = { kind = "glow" }\n', "posterior.options",
         ["nsf"]),
        ('simulator = "two_moons"\n[posterior]\noptions = { kind = "maf" }\n', "posterior.options",
         ["chooses the family", "name a family"]),
        ('simulator = "two_moons"\n[emulator]\nembedding = "flatten"\n', "emulator.embedding", ["no embedding"]),
        ('simulator = "two_moons"\n[simulation]\nnum_simulations = -5\n', "simulation.num_simulations", [">= 10"]),
        ('simulator = "two_moons"\n[evaluation]\nspectrum_maps = 0\n', "evaluation.spectrum_maps", [">= 1"]),
        ('simulator = "cosmology_maps"\n[likelihood]\nmodel = "flow"\noptions = { filter_network = "smooth" }\n',
         "likelihood.options",
         ["filter_network must be one of", "per_radius"]),
        ('simulator = "two_moons"\n[simulation]\nexecutor = "slurm"\n', "simulation.executor", ["dask", "tcp://"]),
        ('simulator = "two_moons"\n[likelihood]\nlog_theta = "yes"\n', "likelihood.log_theta",
         ["true, false or a list"]),
        ('simulator = "two_moons"\n[posterior]\nlog_theta = true\n', "posterior.log_theta", ["only [likelihood]"]),
        ('simulator = "two_moons"\n[observations]\ntheta = [[0.1, 0.2, 0.3]]\n', "observations.theta",
         ["d_theta = 2"]),
        ('simulator = "two_moons"\n[observations]\ntheta = [[5.0, 0.0]]\n', "observations.theta", ["support"]),
        ('simulator = "two_moons"\n[observations]\nfile = "nowhere.npy"\n', "observations.file", ["no file"]),
        ('simulator = "two_moons"\n[observations]\nheld_out = 2\ntheta = [0.1, 0.2]\n', "observations.theta",
         ["one of held_out, theta, file"]),
        ('simulator = "two_moons"\n[posterior]\nenabled = false\n', "posterior.enabled", ["at least one"]),
        ('simulator = "two_moons"\ndevice = "gpu"\n', "device", ["'cuda'"]),
        ('simulator = "two_moons"\n[output]\nreport = "out.pdf"\n', "output.report", [".html"]),
        ('[simulation]\nnum_simulations = 100\n', "simulator.name", ["missing"]),
        ('simulator = "two_moons"\nseed = 1.5\n', "seed", ["integer"]),
        ('simulator = "two_moons"\n[posterior]\nnum_train = 5\n', "posterior.num_train", [">= 10"]),
        ("simulator = two_moons\n", "(file)", ["not valid TOML"]),
    ],
)
def test_invalid_configs_name_the_key_and_what_is_allowed(text, key, words, tmp_path):
    with pytest.raises(ConfigError) as e:
        parse(text, base_dir=tmp_path)
    assert e.value.key == key
    message = str(e.value)
    assert f"'{key}'" in message
    for w in words:
        assert w in message


def test_user_callable_and_object(tmp_path, monkeypatch):
    (tmp_path / "cfg_user_sim.py").write_text(textwrap.dedent("""
        import torch
        from torch.distributions import Independent, Uniform

        class Shift:
            def __init__(self, scale=0.1):
                self.scale = scale
                self.prior = Independent(Uniform(torch.zeros(2), torch.ones(2)), 1)
            def __call__(self, theta):
                return theta + self.scale * torch.randn_like(theta)

        def make_simulator(scale=0.1):
            return Shift(scale)

        instance = Shift(0.5)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    sim = resolve_simulator("cfg_user_sim:make_simulator", {"scale": 0.2})
    assert sim.scale == 0.2 and sim.prior.event_shape == (2,)
    assert resolve_simulator("cfg_user_sim:instance", {}).scale == 0.5
    with pytest.raises(ConfigError, match="takes no options"):
        resolve_simulator("cfg_user_sim:instance", {"scale": 1})
    with pytest.raises(ConfigError, match="not accepted") as e:
        resolve_simulator("cfg_user_sim:make_simulator", {"sigma": 1})
    assert e.value.key == "simulator.options"
    with pytest.raises(ConfigError, match="has no attribute"):
        resolve_simulator("cfg_user_sim:nothing", {})
    with pytest.raises(ConfigError, match="cannot import"):
        resolve_simulator("cfg_no_such_module:make", {})


def test_paths_are_relative_to_the_config_file(tmp_path):
    import numpy as np

    np.save(tmp_path / "x.npy", np.zeros((2, 2), dtype=np.float32))
    path = tmp_path / "run.toml"
    path.write_text('simulator = "two_moons"\n[observations]\nfile = "x.npy"\n[output]\ndir = "results"\n')
    config, _ = load_config(path)
    assert config.out == tmp_path / "results" and config.path(config.obs_file).is_file()
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_sample_with_is_read_and_checked():
    """``[posterior] sample_with``: "auto" unless set; only the posterior has it, and "importance" needs emulated
    pairs."""
    from simgen.config import ConfigError, parse_config

    base = 'simulator = "two_moons"\n[posterior]\n'
    assert parse_config(base, build_simulator=False)[0].posterior.sample_with == "auto"
    config, _ = parse_config(base + 'sample_with = "importance"\n', build_simulator=False)
    assert config.posterior.sample_with == "importance"
    for bad, message in ((base + 'sample_with = "mcmc"\n', "auto"),
                         (base + 'num_emulated = 0\nsample_with = "importance"\n', "trains no emulator"),
                         (base + '[likelihood]\nsample_with = "direct"\n', "only \\[posterior\\]")):
        with pytest.raises(ConfigError, match=message) as err:
            parse_config(bad, build_simulator=False)
        assert err.value.key.endswith("sample_with")
