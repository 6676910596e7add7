"""The ``simgen`` command.

``simgen run`` runs the embedded default pipeline: simulate weak-lensing-like convergence maps
(``cosmology_maps``: a Gaussian field with shape noise, θ = (Ω_m, σ_8, w_0)), fit a flow posterior with a
power-spectrum embedding and a convolutional VAE emulator, infer θ for 3 held-out observations and compare each
posterior with the exact one (C2ST, corner plots), check calibration (coverage, SBC) and the emulator's maps
against the simulator's, and write everything to ``simgen-out/`` (``report.html``, ``summary.json``, the
models, the store). ``simgen run CONFIG.toml`` runs the same pipeline for any simulator; ``simgen init`` writes
a commented example configuration.

Exit codes: 0 success, 1 a failure while running, 2 a usage or configuration error (reported before anything
runs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["main"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A command line that cannot run (exit code 2)."""


def _say(args: argparse.Namespace) -> Callable[[str], None]:
    if getattr(args, "quiet", False):
        return lambda _: None
    return lambda text: print(text, flush=True)


def _setup(args: argparse.Namespace) -> None:
    """Threads, headless plotting."""
    import matplotlib

    matplotlib.use("Agg")
    import torch

    torch.set_num_threads(args.threads)


def _config(args: argparse.Namespace) -> tuple[Any, Any]:
    """The validated configuration (file or embedded default) with the command line's overrides applied."""
    from .config import load_config

    config, sim = load_config(getattr(args, "config", None), budget=getattr(args, "budget", None))
    if getattr(args, "seed", None) is not None:
        config.seed = args.seed
    if getattr(args, "device", None) is not None:
        config.device = args.device
    if getattr(args, "out", None) is not None:
        config.out_dir = str(Path(args.out).resolve())
    if getattr(args, "num_simulations", None) is not None:
        config.num_simulations = args.num_simulations
    return config, sim


# ----------------------------------------------------------------------------------------------- commands


def _run(args: argparse.Namespace) -> int:
    config, sim = _config(args)
    _setup(args)
    from . import pipeline

    say = _say(args)
    result = pipeline.run(config, sim, progress=not args.quiet, say=say)
    s = result.summary
    if "mean_c2st" in s:
        scores = [r["posterior_c2st"] for r in s["observations_results"] if "posterior_c2st" in r]
        say(f"C2ST against the exact posterior: mean {s['mean_c2st']:.3f} over {len(scores)} observations "
            f"({', '.join(f'{v:.3f}' for v in scores)}; 0.5 = indistinguishable)")
    say(f"done in {s['total_seconds']:.0f} s. Wrote:")
    for label, path in result.paths.items():
        say(f"  {label:16s} {path}")
    return EXIT_OK


def _init(args: argparse.Namespace) -> int:
    from .config import EXAMPLE_CONFIG

    path = Path(args.path)
    if path.exists() and not args.force:
        raise UsageError(f"{path} exists; pass --force to overwrite it")
    path.write_text(EXAMPLE_CONFIG)
    _say(args)(f"wrote {path}: edit it, then run `simgen run {path}`")
    return EXIT_OK


def _mcmc_options(text: str) -> dict[str, Any]:
    """``--mcmc``: a JSON object of MCMC options, checked as the configuration's ``[evaluation] mcmc``."""
    from .config import ConfigError, parse_mcmc_options

    try:
        return parse_mcmc_options(json.loads(text), "mcmc")
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"a JSON object such as '{{\"method\": \"hmc\"}}'; got {text!r} "
                                         f"({e})") from None
    except ConfigError as e:
        option = e.key.removeprefix("mcmc").removeprefix(".")
        raise argparse.ArgumentTypeError(f"{option + ': ' if option else ''}{e.reason}") from None


def _check_mcmc_target(args: argparse.Namespace, est: Any) -> None:
    """``--mcmc`` sets a ratio estimator's MCMC; refused for a model that samples without one."""
    if args.mcmc is not None and est.direction != "ratio":
        raise UsageError(f"--mcmc sets the MCMC of a ratio estimator's posterior; {args.model} is a "
                         f"{est.direction} model")


def _option(text: str) -> tuple[str, object]:
    """``k=v`` with v read as JSON when it parses (numbers, lists, true/false), else as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"options are KEY=VALUE; got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _simulator_from_args(args: argparse.Namespace) -> tuple[Any, str, dict[str, Any], Any]:
    """(simulator, name, options, config or None) from ``--config`` or ``--simulator``/``--option``."""
    from .config import ConfigError, load_config, resolve_simulator

    if args.config is not None:
        if args.simulator is not None or args.option:
            raise UsageError("give --config or --simulator/--option, not both")
        config, sim = load_config(args.config)
        return sim, config.simulator, config.simulator_options, config
    if args.simulator is None:
        raise UsageError("name a simulator: --simulator NAME (or --config CONFIG.toml)")
    options = dict(args.option or [])
    try:
        sim = resolve_simulator(args.simulator, options, base_dir=Path.cwd())
    except ConfigError as e:  # the command line's words, not the file's keys
        raise UsageError(str(e).replace("config key 'simulator.name'", "--simulator")
                         .replace("config key 'simulator.options'", "--option")) from None
    return sim, args.simulator, options, None


def _simulate(args: argparse.Namespace) -> int:
    import warnings

    import torch

    import simgen

    sim, name, options, config = _simulator_from_args(args)
    torch.set_num_threads(args.threads)
    num = args.num if args.num is not None else (config.num_simulations if config else None)
    store = args.store if args.store is not None else (str(config.out / config.store) if config else None)
    if num is None or store is None:
        raise UsageError("--num and --store are required without --config")
    seed = args.seed if args.seed is not None else (config.seed if config else 0)
    chunk_size = args.chunk_size if args.chunk_size is not None else (config.chunk_size if config else 1000)
    workers, executor = args.workers, None
    if args.dask is not None:
        executor = "dask" if args.dask == "local" else args.dask
    elif config is not None and workers is None:
        workers, executor = config.workers or None, config.executor or None
    gold = args.gold if args.gold is not None else (config.gold if config else False)
    reference = config.gold_reference if config is not None and args.gold is None else None
    if args.gold_reference is not None:
        reference = _read_array(args.gold_reference, "--gold-reference")
    if reference is not None and not gold:
        raise UsageError("--gold-reference goes with --gold (the joint log ratio is part of the gold)")
    say = _say(args)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # summarised below
        try:
            s = simgen.simulate(sim, sim.prior, num, seed=seed, chunk_size=chunk_size, progress=not args.quiet,
                                store=store, return_data=False, workers=workers, executor=executor,
                                metadata={"simulator_options": {"name": name, **options}}, gold=gold,
                                gold_reference=reference)
        except ValueError as e:
            if gold and ("joint_log_prob" in str(e) or "gold_reference" in str(e)):
                raise UsageError(str(e)) from None
            raise
    valid = s.valid
    n, n_valid = valid.shape[0], int(valid.sum())
    say(f"store {store}: {n} simulations, {n_valid} valid, {n - n_valid} failed "
        f"({time.perf_counter() - start:.1f} s)")
    if n_valid < n:
        kinds: dict[str, int] = {}
        failures = s.failures
        for f in failures:
            kinds[f.error] = kinds.get(f.error, 0) + 1
        say("failures: " + ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items(), key=lambda kv: -kv[1])))
        for f in failures[:3]:
            say(f"  row {f.row}, theta={[round(v, 4) for v in f.theta]}: {f.error}: {f.message[:200]}")
    return EXIT_OK


def _store_simulator(store: Any) -> Any:
    """The simulator a store was written with, rebuilt from its metadata (registered simulators only)."""
    import simulators

    meta = store.metadata.get("simulator", {})
    options = dict(meta.get("options") or {})
    name = options.pop("name", meta.get("name"))
    if name not in simulators.available():
        raise UsageError(f"the store {store.path} was written by simulator {name!r}, which is not registered: "
                         "pass --config CONFIG.toml naming it")
    return simulators.get(name, **options)


def _train(args: argparse.Namespace) -> int:
    import simgen

    from . import pipeline
    from .config import ModelConfig, load_config
    from .estimators.ratio import RATIO_MODELS
    from .models import MODELS

    if args.config is not None:
        config, sim = load_config(args.config)
    else:
        config, sim = load_config(None, build_simulator=False)
        config.posterior, config.likelihood = ModelConfig(True, "auto"), ModelConfig(True, "auto")
        config.ratio = ModelConfig(True, "nre")
        config.joint = ModelConfig(True, "simformer")
    models = {"ratio": ("nre", *sorted(RATIO_MODELS)), "joint": ("simformer",)}.get(args.direction,
                                                                                   ("auto", *sorted(MODELS)))
    if args.model is not None and args.model not in models:
        raise UsageError(f"--model must be one of {', '.join(models)} for a {args.direction}; got {args.model!r}")
    if args.direction == "emulator":
        warnings.warn("--direction emulator is now --direction likelihood", FutureWarning, stacklevel=2)
        args.direction = "likelihood"
    _setup(args)
    store = simgen.open_store(args.store)
    if sim is None:
        sim = _store_simulator(store)
    spec = {"posterior": config.posterior, "likelihood": config.likelihood, "ratio": config.ratio,
            "joint": config.joint}[args.direction]
    if args.model is not None and args.model != spec.model:
        spec.model, spec.options = args.model, {}
    if args.embedding is not None:
        spec.embedding = args.embedding
    if args.discrete_model is not None:
        if args.direction != "likelihood":
            raise UsageError("--discrete-model is for --direction likelihood (how x's discrete columns are modelled)")
        spec.discrete_model = args.discrete_model
    if args.log_theta is not None:
        if args.direction != "likelihood":
            raise UsageError("--log-theta is for --direction likelihood (whose context is θ)")
        spec.log_theta = _log_theta_arg(args.log_theta)
    from .estimators.gold import DENSITY_GOLD_MODES, GOLD_MODES, check_gold_options, gold_terms

    if args.gold is not None or args.gold_weight is not None:
        mode = args.gold if args.gold is not None else (spec.gold or "score")
        weight = args.gold_weight if args.gold_weight is not None else spec.gold_weight
        try:
            spec.gold, spec.gold_weight = check_gold_options(
                mode, weight, GOLD_MODES if args.direction == "ratio" else DENSITY_GOLD_MODES)
        except ValueError as e:
            raise UsageError(f"--gold/--gold-weight: {e}") from None
    if spec.gold is not None and not store.has_gold:
        raise UsageError(f"gold = {spec.gold!r} trains on the simulations' gold, but the store {args.store} holds no "
                         "gold: simulate it with simgen simulate --gold")
    reference = (store.metadata.get("gold") or {}).get("reference")
    if gold_terms(spec.gold)[1] and reference is None:
        raise UsageError(f"gold = {spec.gold!r} trains on the joint log ratio, but the store {args.store} holds "
                         "none: simulate it with simgen simulate --gold --gold-reference ROWS")
    for key in ("max_epochs", "max_time", "batch_size", "learning_rate", "patience", "start_patience",
                "start_margin", "validate_initial", "precision"):
        if getattr(args, key) is not None:
            spec.training[key] = getattr(args, key)
    if (args.emulator is not None or args.num_emulated is not None) and args.direction != "posterior":
        raise UsageError("--emulator and --num-emulated are for --direction posterior (pairs drawn from an emulator)")
    if args.num_emulated is not None and args.num_emulated < 0:
        raise UsageError(f"--num-emulated must be at least 0; got {args.num_emulated}")
    if args.num_emulated == 0 and args.emulator is not None:
        raise UsageError("--num-emulated 0 trains on no emulated pairs: leave --emulator out")
    if args.num_emulated is not None:
        spec.num_emulated = args.num_emulated
    if args.sample_with is not None:
        if args.direction != "posterior":
            raise UsageError("--sample-with is for --direction posterior (importance sampling of its emulator's "
                             "posterior)")
        if args.sample_with == "importance" and spec.num_emulated == 0:
            raise UsageError("--sample-with importance samples the emulator's posterior: not with --num-emulated 0")
        spec.sample_with = args.sample_with
    if args.seed is not None:
        config.seed = args.seed
    if args.device is not None:
        config.device = args.device
    nproc = args.nproc if args.nproc is not None else spec.nproc
    if nproc > 1 and args.emulator is not None:
        raise UsageError("--emulator trains on simulated and emulated pairs in one process (no --nproc)")
    if nproc < 1:
        raise UsageError(f"--nproc must be at least 1; got {nproc}")
    if nproc > 1 and args.direction == "joint":
        raise UsageError("--direction joint trains in one process (no --nproc)")
    if nproc > 1 and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return _launch(nproc, args.argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # a rank of torchrun's: streams its shard of the store
        return _train_rank(args, config, sim, store, spec)
    say = _say(args)
    theta, x = store.load()
    say(f"training a {args.direction} ({spec.model}) on {theta.shape[0]} valid simulations of {args.store}")
    fit = {"posterior": pipeline.fit_posterior, "likelihood": pipeline.fit_likelihood,
           "ratio": pipeline.fit_ratio, "joint": pipeline.fit_joint}[args.direction]
    gold = store.load_gold() if spec.gold is not None else None
    options = {"gold": gold} if gold is not None else {}
    if gold_terms(spec.gold)[1]:
        options["gold_reference"] = reference
    if args.emulator is not None:
        emulator = _load_model(args.emulator, args.device)
        if emulator.direction != "likelihood":
            raise UsageError(f"--emulator: {args.emulator} holds a {emulator.direction} model, not an emulator")
        if spec.num_emulated == 0:
            raise UsageError("--emulator: the configuration's posterior.num_emulated is 0 (no emulated pairs)")
        options["emulator"] = emulator
    estimator = fit(config, sim, theta, x, progress=not args.quiet, say=say, checkpoint=args.checkpoint, **options)
    estimator.save(args.out)
    say(f"wrote {args.out}")
    return EXIT_OK


def _launch(nproc: int, argv: list[str]) -> int:
    """Run ``simgen train`` again as ``nproc`` data-parallel ranks on this machine, through torchrun."""
    import subprocess

    # the ranks learn their number from torchrun; torchrun would read --nproc as its own --nproc-per-node
    ranks_argv, skip = [], False
    for arg in argv:
        if not skip and arg != "--nproc" and not arg.startswith("--nproc="):
            ranks_argv.append(arg)
        skip = arg == "--nproc"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "simgen.cli", *ranks_argv]
    return subprocess.run(command, check=False).returncode


def _train_rank(args: argparse.Namespace, config: Any, sim: Any, store: Any, spec: Any) -> int:
    """One rank of a data-parallel ``simgen train``: fit on this rank's shard of the store's chunks (see
    :mod:`simgen.training.distributed`); rank 0 alone prints and writes the model."""
    import torch

    import simgen

    from .estimators import infer_x_kind
    from .pipeline import _device, make_embedding, model_of
    from .training import is_main_process

    if spec.num_train is not None:
        raise UsageError("num_train (train on the first rows of the store) is not available with nproc > 1")
    say = _say(args) if is_main_process() else (lambda _: None)
    say(f"training a {args.direction} ({spec.model}) on the store {args.store}, "
        f"{os.environ['WORLD_SIZE']} processes")
    x_kind = getattr(sim, "x_kind", None) or infer_x_kind(tuple(store.x_shape))
    if args.direction == "posterior":
        x = torch.empty(0, *store.x_shape)
        if spec.embedding == "power_spectrum":  # calibrated on rows: the first chunk's valid ones, on every rank
            rows = store.read_chunk(*store.visible_chunks()[0], ("x", "valid"))
            x = rows["x"][rows["valid"]]
        estimator = simgen.PosteriorEstimator(sim.prior, model_of(spec, "vector"), simulator=sim,
                                              embedding=make_embedding(spec.embedding, x, x_kind,
                                                                       seed=config.seed),
                                              device=_device(config), gold=spec.gold, gold_weight=spec.gold_weight)
    else:
        estimator = simgen.LikelihoodEstimator(sim.prior, model_of(spec, x_kind),
                                               simulator=sim, device=_device(config),
                                               discrete_model=spec.discrete_model, gold=spec.gold,
                                               gold_weight=spec.gold_weight, log_theta=spec.log_theta)
    history = estimator.fit(store, seed=config.seed, progress=not args.quiet and is_main_process(),
                            checkpoint=args.checkpoint, **spec.training)
    say(f"  {history.epochs} epochs in {history.wall_time:.0f} s, best validation loss "
        f"{history.best_validation_loss:.3f}")
    if is_main_process():
        estimator.save(args.out)
        say(f"wrote {args.out}")
    return EXIT_OK


def _log_theta_arg(text: str) -> bool | list[int]:
    """``--log-theta``: ``true``, ``false`` or dimensions ``0,1`` (as the config's ``log_theta``)."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        dims = [int(i) for i in text.split(",")]
    except ValueError:
        dims = [-1]
    if any(i < 0 for i in dims):
        raise UsageError(f"--log-theta must be true, false or dimensions such as 0,1; got {text!r}")
    return dims


def _read_array(text: str, what: str) -> Any:
    """An array from a file (.npy, .pt, .json) or an inline JSON list."""
    import torch

    from .config import ConfigError
    from .pipeline import load_observations

    path = Path(text)
    if path.suffix in (".npy", ".pt", ".json") and path.is_file():
        try:
            return load_observations(path, None)
        except ConfigError as e:
            raise UsageError(f"{what}: {e}") from None
    try:
        return torch.tensor(json.loads(text), dtype=torch.float32)
    except (json.JSONDecodeError, TypeError, ValueError, RuntimeError):
        raise UsageError(f"{what} must be a .npy/.pt/.json file or a JSON list of numbers; got {text!r}") from None


def _load_model(path: str, device: str | None) -> Any:
    import simgen

    return simgen.load(path, device=device)


def _save_array(path: str, array: Any) -> None:
    import numpy as np
    import torch

    if path.endswith(".npy"):
        np.save(path, array.numpy())
    elif path.endswith(".pt"):
        torch.save(array, path)
    else:
        raise UsageError(f"--out must end in .npy or .pt; got {path!r}")


def _sample(args: argparse.Namespace) -> int:
    import torch

    _setup(args)
    if not args.out.endswith((".npy", ".pt")):
        raise UsageError(f"--out must end in .npy or .pt; got {args.out!r}")
    est = _load_model(args.model, args.device)
    generator = torch.Generator().manual_seed(args.seed if args.seed is not None else 0)
    # a posterior samples θ given observations x (a ratio estimator's by MCMC, a joint model's from its
    # conditional), an emulator x given parameters θ
    joint = est.direction == "joint"
    _check_mcmc_target(args, est)
    if est.direction == "ratio":
        from . import pipeline

        est = est.posterior(progress=not args.quiet, **pipeline.mcmc_options(args.mcmc or {}, device=args.device,
                                                                              key="mcmc"))
        flag, given = "--x", args.x
        missing = f"{args.model} is a ratio estimator: give the observations with --x FILE"
    elif est.direction in ("posterior", "joint"):
        flag, given = "--x", args.x
        missing = f"{args.model} is a {est.direction} model: give the observations with --x FILE"
    else:
        flag, given = "--theta", args.theta
        missing = f"{args.model} is an emulator: give the parameters with --theta FILE or '[[...]]'"
    if given is None:
        raise UsageError(missing)
    try:
        given = _read_array(given, flag)
        draws = (est.sample_posterior(args.num, torch.as_tensor(given).reshape(-1, est.d_x), generator=generator)
                 if joint else est.sample_batched(args.num, given, generator=generator))
    except ValueError as e:
        raise UsageError(f"{flag}: {e}") from None
    what = (f"{args.num} draws of θ for each of {draws.shape[0]} observation(s)" if flag == "--x"
            else f"{args.num} emulated simulations at each of {draws.shape[0]} θ")
    _save_array(args.out, draws)
    _say(args)(f"wrote {what} to {args.out} (shape {list(draws.shape)})")
    return EXIT_OK


def _evaluate(args: argparse.Namespace) -> int:
    from . import pipeline
    from .config import load_config

    sim, name, options, config = _simulator_from_args(args)
    if config is None:
        config, _ = load_config(None, build_simulator=False)
        config.simulator, config.simulator_options = name, options
    _setup(args)
    config.out_dir = str(Path(args.out).resolve())
    if args.seed is not None:
        config.seed = args.seed
    config.held_out, config.theta_obs, config.obs_file = args.num_observations, None, None
    config.calibration = args.calibration
    config.num_samples = config.reference_samples = args.num_samples
    config.calibration_samples = min(args.num_samples, config.calibration_samples)
    config.emulator_maps = args.num_samples if args.emulator_samples is None else args.emulator_samples
    if args.spectrum_maps is not None:
        config.spectrum_maps = args.spectrum_maps
    if args.mcmc is not None:
        config.mcmc = {**config.mcmc, **args.mcmc}
    est = _load_model(args.model, args.device)
    _check_mcmc_target(args, est)
    say = _say(args)
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    outputs = pipeline.Outputs(out / "figures")
    x_shape = tuple(getattr(sim, "x_shape", None) or est.x_shape)
    observations = pipeline.make_observations(config, sim, x_shape)
    summary: dict[str, Any] = {"model": str(args.model), "simulator": name, "simulator_options": options}
    if est.direction == "joint":  # its posterior conditional, scored per observation (no calibration checks)
        rows = pipeline.check_observations(config, sim, observations, outputs, joint=est, progress=not args.quiet,
                                           say=say)
        summary["observations_results"] = rows
        scores = [r["joint_c2st"] for r in rows if "joint_c2st" in r]
        if scores:
            summary["mean_c2st"] = round(sum(scores) / len(scores), 4)
            say(f"mean C2ST against the reference posterior: {summary['mean_c2st']:.3f}")
    elif est.direction in ("posterior", "ratio"):
        ratio = est.direction == "ratio"
        rows = pipeline.check_observations(config, sim, observations, outputs, posterior=None if ratio else est,
                                           ratio=est if ratio else None, progress=not args.quiet, say=say)
        summary["observations_results"] = rows
        label = "ratio_mcmc" if ratio else "posterior"
        scores = [r[f"{label}_c2st"] for r in rows if f"{label}_c2st" in r]
        if scores:
            summary["mean_c2st"] = round(sum(scores) / len(scores), 4)
            say(f"mean C2ST against the reference posterior: {summary['mean_c2st']:.3f}")
        if config.calibration > 0:
            mcmc = pipeline.mcmc_options(config.mcmc, base_dir=config.base_dir, device=args.device) if ratio else {}
            posterior = est.posterior(num_chains=config.mcmc_chains, warmup=config.mcmc_warmup,
                                      progress=False, **mcmc) if ratio else est
            summary["calibration"] = pipeline.check_calibration(config, sim, posterior, outputs, say=say)
    else:
        summary["emulator"] = pipeline.check_likelihood(config, sim, est, observations.theta, outputs, say=say)
    summary["figures"] = [{**f, "path": str(Path(f["path"]).relative_to(out))} for f in outputs.files]
    (out / "evaluation.json").write_text(json.dumps(summary, indent=2, default=str))
    report = pipeline.write_report(out / "report.html", f"simgen evaluate: {args.model}",
                                   pipeline.summary_facts(summary), outputs)
    say(f"wrote {out / 'evaluation.json'}, {report} and {len(outputs.files)} figure(s) in {outputs.folder}")
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from . import pipeline

    _setup(args)
    folder = Path(args.folder)
    try:
        path = pipeline.report_from_folder(folder, args.name)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None
    _say(args)(f"wrote {path}")
    return EXIT_OK


# ------------------------------------------------------------------------------------------------- parser


def _common(p: argparse.ArgumentParser, *, device: bool = True, threads: int | None = None) -> None:
    p.add_argument("--seed", type=int, default=None, help="seed (default: the configuration's, else 0)")
    if device:
        p.add_argument("--device", default=None,
                       help="torch device: cpu, cuda, cuda:1 (default: CUDA when present, else the CPU)")
    p.add_argument("--threads", type=int, default=threads or max(1, (os.cpu_count() or 2) // 2),
                   help="torch CPU threads (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="print nothing (errors still go to stderr)")


def _parser() -> argparse.ArgumentParser:
    from .config import BUDGETS

    parser = argparse.ArgumentParser(prog="simgen", description=(__doc__ or "").replace("``", ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run", help="the whole pipeline: simulate, fit, infer, check, report (default: cosmology maps)",
        description="Run the pipeline of CONFIG.toml (`simgen init` writes an example), or the embedded default "
                    "on cosmology_maps when no CONFIG is given. Everything goes to the output folder "
                    "(report.html, summary.json, models, store, figures).")
    run.add_argument("config", nargs="?", default=None, metavar="CONFIG.toml", help="configuration file")
    run.add_argument("--budget", choices=tuple(BUDGETS), default=None,
                     help="preset of simulation and training sizes (tiny: seconds, for tests; small: about a "
                          "minute; default: minutes); keys set in CONFIG win")
    run.add_argument("--num-simulations", type=int, default=None, help="override simulation.num_simulations")
    run.add_argument("--out", default=None, help="output folder (default: output.dir, simgen-out)")
    _common(run)
    run.set_defaults(func=_run)

    init = sub.add_parser("init", help="write a commented example configuration",
                          description="Write a commented example configuration for `simgen run CONFIG.toml`.")
    init.add_argument("path", nargs="?", default="simgen.toml", help="where to write it (default simgen.toml)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.add_argument("--quiet", action="store_true", help="print nothing")
    init.set_defaults(func=_init)

    sim = sub.add_parser("simulate", help="run a simulation campaign into a resumable store",
                         description="Simulate --num parameter draws from the simulator's prior into --store "
                                     "(resumable: run again after an interruption, or with a larger --num). The "
                                     "simulator comes from --simulator/--option or from --config.")
    sim.add_argument("--config", default=None, metavar="CONFIG.toml",
                     help="take the simulator, budget, seed, chunk size, store and executor from a configuration")
    sim.add_argument("--simulator", default=None,
                     help="registered simulator name (e.g. two_moons) or package.module:factory")
    sim.add_argument("--option", action="append", type=_option, metavar="KEY=VALUE",
                     help="simulator option (repeatable; VALUE read as JSON when it parses)")
    sim.add_argument("--num", type=int, default=None, help="number of simulations")
    sim.add_argument("--store", default=None, help="store folder, e.g. runs.h5")
    sim.add_argument("--chunk-size", type=int, default=None, help="simulations per chunk (default 1000)")
    sim.add_argument("--gold", action="store_true", default=None,
                     help="also mine each simulation's joint score from the simulator's latents (simulators with "
                          "return_latents and joint_log_prob, e.g. collider); default: the config's simulation.gold")
    sim.add_argument("--gold-reference", default=None, metavar="ROWS",
                     help="with --gold, also mine the joint log ratio at these θ_ref rows (inline JSON "
                          "[[...], ...] or a .npy/.pt/.json file), for a ratio estimator's gold ratio term; "
                          "default: the config's simulation.gold_reference")
    where = sim.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=None, help="local worker processes")
    where.add_argument("--dask", default=None, metavar="ADDRESS",
                       help="dask scheduler address (tcp://host:8786), or 'local' for a LocalCluster")
    _common(sim, device=False, threads=1)
    sim.set_defaults(func=_simulate)

    train = sub.add_parser("train", help="fit a posterior, a likelihood (emulator) or a ratio on a store",
                           description="Fit a posterior p(θ | x), a likelihood p(x | θ) or a ratio estimator of "
                                       "p(x | θ) / p(x) on the valid rows of a "
                                       "store and save it. The simulator (its prior, x_kind) is rebuilt from the "
                                       "store's metadata, or taken from --config with the model settings there.")
    train.add_argument("--store", required=True, help="store folder written by simgen simulate or simgen run")
    train.add_argument("--out", required=True, help="model file to write, e.g. posterior.pt")
    train.add_argument("--config", default=None, metavar="CONFIG.toml", help="simulator and model settings")
    train.add_argument("--direction", choices=("posterior", "likelihood", "emulator", "ratio", "joint"),
                       default="posterior",
                       help="posterior p(θ | x), likelihood p(x | θ) (an emulator of the simulator), ratio "
                            "p(x | θ) / p(x) (neural ratio estimation; its posterior by MCMC) or joint p(θ, x) (an "
                            "all-in-one Simformer: any conditional) (default posterior; 'emulator' is the former "
                            "name of 'likelihood')")
    train.add_argument("--model", default=None, help="family: auto (chosen from the data), flow, cnf, diffusion, "
                                                     "vae, simformer; for a ratio nre, nre_a, nre_b, nre_c, bnre, "
                                                     "tre; for a joint simformer (default: the config's, else auto "
                                                     "/ nre / simformer)")
    train.add_argument("--embedding", choices=("auto", "power_spectrum", "flatten"), default=None,
                       help="posterior embedding of x (default auto)")
    train.add_argument("--discrete-model", choices=("mnle", "dequantize"), default=None,
                       help="likelihood: how the simulator's discrete x columns are modelled, by a categorical "
                            "network (mnle, the default for a flow) or by dequantisation")
    train.add_argument("--log-theta", default=None, metavar="true|false|0,1",
                       help="likelihood: which θ enter the network as log θ: true (those on which the prior is "
                            "positive; the default), false (none), or a comma-separated list of dimensions")
    train.add_argument("--emulator", default=None, metavar="EMULATOR.pt",
                       help="posterior: also train on pairs drawn from this saved emulator (θ from the prior, x from "
                            "it; README 'Emulated pairs')")
    train.add_argument("--num-emulated", type=int, default=None, metavar="N",
                       help="posterior: how many emulated pairs, drawn from --emulator or, without it, from an "
                            "emulator fitted on the store's simulations first; 0: none (default: the "
                            "configuration's num_emulated, else 3 times the simulations with --emulator, else what "
                            "model 'auto' chooses)")
    train.add_argument("--sample-with", choices=("auto", "direct", "importance"), default=None,
                       help="posterior with emulated pairs: importance (sample the emulator's posterior by "
                            "importance sampling from the fitted family), direct (the family alone) or auto "
                            "(whichever scores better on held-out simulations; default: the configuration's "
                            "sample_with, else auto)")
    train.add_argument("--gold", choices=("score", "ratio", "ratio+score"), default=None,
                       help="train on the store's gold: score (the joint score: SCANDAL for a flow, the score term "
                            "for a ratio), ratio or ratio+score (the joint log ratio, --direction ratio only: "
                            "RASCAL/ALICES); the store must be simulated with --gold (and --gold-reference for "
                            "ratio); default: the config's, else score when --gold-weight is given")
    train.add_argument("--gold-weight", type=float, default=None, metavar="ALPHA",
                       help="the gold terms' weight α (default 0.2); alone, it means --gold score (or the "
                            "config's gold)")
    train.add_argument("--max-epochs", type=int, default=None, help="cap on training epochs")
    train.add_argument("--max-time", type=float, default=None, help="cap on training seconds")
    train.add_argument("--batch-size", type=int, default=None, help="rows per step (default: automatic)")
    train.add_argument("--learning-rate", type=float, default=None, help="initial learning rate")
    train.add_argument("--patience", type=int, default=None,
                       help="early stopping: epochs without a lower validation loss (default: the family's)")
    train.add_argument("--start-patience", type=int, default=None,
                       help="early stopping's patience while the run is on its start, its validation loss not yet "
                            "below the first epoch's by more than --start-margin (default: the patience; 30 for "
                            "gold fits)")
    train.add_argument("--start-margin", type=float, default=None,
                       help="how far below the first epoch's the validation loss must fall for the run to leave "
                            "its start (default 0; 0.05 nats for gold fits)")
    train.add_argument("--validate-initial", action=argparse.BooleanOptionalAction, default=None,
                       help="validate the model as built, before its first step, and return it when it is better "
                            "than every epoch's (default: on)")
    train.add_argument("--precision", choices=("32", "bf16", "16"), default=None,
                       help="training arithmetic: 32 (default), or mixed precision with bf16 or 16 (float16, GPUs)")
    train.add_argument("--nproc", type=int, default=None,
                       help="data-parallel processes on this machine, launched through torchrun (default: the "
                            "config's training.nproc, else 1); under torchrun or srun, the ranks it started")
    train.add_argument("--checkpoint", default=None, metavar="PATH",
                       help="save the training state there every epoch and resume from it when it exists")
    _common(train)
    train.set_defaults(func=_train)

    sample = sub.add_parser("sample", help="draw from a saved posterior, ratio estimator or emulator",
                            description="Posterior or ratio estimator (by MCMC): --num draws of θ for each "
                                        "observation in --x. Emulator: --num "
                                        "simulations at each θ in --theta. Saved as [m, num, ...] to --out.")
    sample.add_argument("--model", required=True, help="model file (simgen run's posterior.pt, simgen train's)")
    sample.add_argument("--x", default=None, help="observations [m, *x_shape]: .npy, .pt or .json")
    sample.add_argument("--theta", default=None, help="parameters [m, d_theta]: a file or a JSON list")
    sample.add_argument("--num", type=int, default=1000, help="draws per observation or θ (default 1000)")
    sample.add_argument("--out", required=True, help="output file, .npy or .pt")
    sample.add_argument("--mcmc", type=_mcmc_options, default=None, metavar="JSON",
                        help="a ratio estimator's MCMC options, e.g. '{\"method\": \"hmc\", \"thin\": 3}' "
                             "(keys as the configuration's [evaluation] mcmc)")
    _common(sample)
    sample.set_defaults(func=_sample)

    evaluate = sub.add_parser("evaluate", help="check a saved model against its simulator",
                              description="A posterior: C2ST against the simulator's reference posterior at "
                                          "held-out observations (where it has one), corner plots, coverage and "
                                          "SBC. An emulator: emulated vs simulated data at held-out θ.")
    evaluate.add_argument("--model", required=True, help="model file")
    evaluate.add_argument("--config", default=None, metavar="CONFIG.toml", help="take the simulator from here")
    evaluate.add_argument("--simulator", default=None, help="registered simulator name or package.module:factory")
    evaluate.add_argument("--option", action="append", type=_option, metavar="KEY=VALUE", help="simulator option")
    evaluate.add_argument("--num-observations", type=int, default=3, help="held-out observations (default 3)")
    evaluate.add_argument("--num-samples", type=int, default=2000, help="draws per observation (default 2000)")
    evaluate.add_argument("--calibration", type=int, default=100,
                          help="held-out simulations for coverage and SBC (default 100; 0 skips)")
    evaluate.add_argument("--emulator-samples", type=int, default=None,
                          help="emulated and simulated draws per θ (default: --num-samples)")
    evaluate.add_argument("--spectrum-maps", type=int, default=None,
                          help="maps: simulated and emulated maps per θ for the power spectrum and its correlations "
                               "across maps (default 4096, or the configuration's evaluation.spectrum_maps)")
    evaluate.add_argument("--out", default="simgen-eval", help="output folder (default simgen-eval)")
    evaluate.add_argument("--mcmc", type=_mcmc_options, default=None, metavar="JSON",
                          help="a ratio estimator's MCMC options as JSON (over the configuration's [evaluation] mcmc)")
    _common(evaluate)
    evaluate.set_defaults(func=_evaluate)

    report = sub.add_parser("report", help="(re)write the HTML report of a run's output folder",
                            description="Write FOLDER/report.html from the summary.json (or evaluation.json) and "
                                        "figures that simgen run (or simgen evaluate) left in FOLDER.")
    report.add_argument("folder", nargs="?", default="simgen-out", help="output folder (default simgen-out)")
    report.add_argument("--name", default="report.html", help="file name of the report (default report.html)")
    report.add_argument("--quiet", action="store_true", help="print nothing")
    report.set_defaults(func=_report, threads=1)
    return parser


def _check_numbers(args: argparse.Namespace) -> None:
    for name in ("num", "num_simulations", "workers", "chunk_size", "threads", "num_observations", "max_epochs",
                 "emulator_samples", "spectrum_maps"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1; got {value}")
    if getattr(args, "num_simulations", None) is not None and args.num_simulations < 10:
        raise UsageError(f"--num-simulations must be at least 10; got {args.num_simulations}")
    for name in ("calibration",):
        value = getattr(args, name, None)
        if value is not None and value < 0:
            raise UsageError(f"--{name} must be >= 0; got {value}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``simgen`` console script; returns the exit code (0 ok, 1 failure, 2 usage or
    configuration error)."""
    from .config import ConfigError

    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2), already printed by argparse
        return int(e.code or 0)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what a relaunch under torchrun repeats
    try:
        _check_numbers(args)
        return args.func(args)
    except (UsageError, ConfigError) as e:
        print(f"simgen {args.command}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"simgen {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a runtime failure: reported in one line, exit code 1
        print(f"simgen {args.command}: error: {type(e).__name__}: {e}", file=sys.stderr)
        if os.environ.get("SIMGEN_DEBUG"):
            raise
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
