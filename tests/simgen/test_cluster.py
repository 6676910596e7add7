"""Cluster users: the README's SLURMCluster recipe up to the submission (the job script sbatch would get; skipped
without dask-jobqueue, which is the ``cluster`` extra), and a dask cluster object accepted as ``executor=``."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch
from sbi.utils import BoxUniform

import simgen
from simgen.executors import Dask, make_executor

README = Path(__file__).resolve().parents[2] / "README.md"
PRIOR = BoxUniform(-torch.ones(2), torch.ones(2))


def noisy(theta, *, generator=None):
    return theta + torch.randn(theta.shape, generator=generator)


def _run(**kwargs):
    return simgen.simulate(noisy, PRIOR, 130, seed=2, chunk_size=40, progress=False, **kwargs)


def slurm_recipe() -> str:
    """The README's ```python block that builds a SLURMCluster."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    [block] = [b for b in blocks if "SLURMCluster(" in b]
    return block


def test_the_readme_slurm_recipe_writes_the_job_script_it_documents(capsys):
    pytest.importorskip("dask_jobqueue")
    recipe = slurm_recipe()
    assert "executor=cluster" in recipe
    before_submission = recipe[: recipe.index("cluster.scale(")]  # scale() would call sbatch
    namespace: dict[str, object] = {"simgen": simgen}
    exec(compile(before_submission, str(README), "exec"), namespace)  # noqa: S102 - the README's own code
    cluster = namespace["cluster"]
    try:
        script = cluster.job_script()
        assert capsys.readouterr().out.strip() == script.strip()  # the recipe prints it
        assert script.startswith("#!/usr/bin/env bash")
        assert re.search(r"^#SBATCH -t 02:00:00$", script, flags=re.M)
        assert re.search(r"^#SBATCH --mem=4G", script, flags=re.M)
        assert re.search(r"^#SBATCH -n 1$", script, flags=re.M) and "--cpus-per-task=1" in script
        assert "export OMP_NUM_THREADS=1" in script
        worker = script.strip().splitlines()[-1]  # the command the job runs: one single-threaded worker
        assert "distributed.cli.dask_worker" in worker and cluster.scheduler_address in worker
        assert "--nthreads 1" in worker and "--memory-limit 3.73GiB" in worker
        assert worker.startswith(sys.executable)  # the workers run the driver's interpreter unless python= says
        executor = make_executor(cluster)  # accepted as executor= (no worker yet: nothing would run)
        assert isinstance(executor, Dask) and executor.client.scheduler.address == cluster.scheduler_address
        executor.close()
    finally:
        cluster.close()


def test_a_dask_cluster_object_is_an_executor_with_in_process_results():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster:
        a, b = _run(executor=cluster), _run()
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert cluster.status.name == "running"  # the caller's cluster is left running
