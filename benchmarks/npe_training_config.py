"""Held-out test NLL and training CPU time of simgen's flow NPE under one family/training configuration.

Trains ``PosteriorEstimator(prior, Flow(**FAMILY))`` on ``N`` simulations of ``TASK`` (seed 0) with the
``TrainingConfig`` fields in ``TRAINING`` and reports −mean log q(θ | x) on 5,000 fresh simulations (seed 123):
the expected KL to the true posterior up to a constant, so lower is better and differences compare configurations.

    OMP_NUM_THREADS=1 python benchmarks/npe_training_config.py two_moons 10000 '{}' '{"learning_rate": 0.002}'
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import simgen
import simulators


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task")
    parser.add_argument("num_simulations", type=int)
    parser.add_argument("family", nargs="?", default="{}", help="Flow keyword arguments as JSON")
    parser.add_argument("training", nargs="?", default="{}", help="TrainingConfig fields as JSON")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    family, training = json.loads(args.family), json.loads(args.training)
    sim = simulators.get(args.task)
    theta, x = simgen.simulate(sim, sim.prior, args.num_simulations, seed=0, progress=False)
    theta_test, x_test = simgen.simulate(sim, sim.prior, 5_000, seed=123, progress=False)
    cpu, wall = time.process_time(), time.perf_counter()
    post = simgen.PosteriorEstimator(sim.prior, simgen.models.Flow(**family))
    post.fit(theta, x, seed=0, progress=False, **training)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    nll = -post.log_prob(theta_test, x_test).mean().item()
    print(f"{args.task} {args.num_simulations} family={family} training={training}: test NLL {nll:.4f}, "
          f"{post.history.epochs} epochs, {cpu:.1f} CPU s, {wall:.1f} s wall, {torch.get_num_threads()} thread(s)")


if __name__ == "__main__":
    main()
