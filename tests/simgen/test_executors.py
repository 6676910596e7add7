import threading
import warnings

import pytest
import torch
from sbi.utils import BoxUniform

import simgen
from simgen.executors import Dask, InProcess, LocalProcesses, make_executor

PRIOR = BoxUniform(-torch.ones(2), torch.ones(2))


def noisy(theta, *, generator=None):
    return theta + torch.randn(theta.shape, generator=generator)


def plain(theta):  # uses the global RNG (seeded by simulate, under a lock)
    return theta + torch.randn(theta.shape)


def flaky(theta, *, generator=None):
    if (theta[:, 0] > 0.7).any():
        raise RuntimeError("diverged")
    return theta + torch.randn(theta.shape, generator=generator)


def _run(sim, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return simgen.simulate(sim, PRIOR, 330, seed=2, chunk_size=40, progress=False, **kwargs)


def _equal(a, b):
    return torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_make_executor_choices():
    assert isinstance(make_executor(), InProcess) and isinstance(make_executor(None, 1), InProcess)
    assert isinstance(make_executor(None, 2), LocalProcesses) and isinstance(make_executor("processes", 2),
                                                                             LocalProcesses)
    with pytest.raises(ValueError, match="executor must be"):
        make_executor("slurm")
    with pytest.raises(ValueError, match="workers"):
        make_executor(None, 0)


def test_local_processes_equal_in_process_and_write_the_store(tmp_path):
    reference = _run(flaky)
    assert _equal(_run(flaky, workers=2, store=tmp_path / "runs.h5"), reference)
    store = simgen.open_store(tmp_path / "runs.h5")
    assert store.complete and len(store.failures) == 330 - reference[0].shape[0]


def test_unpicklable_simulator_gets_a_clear_error():
    lock = threading.Lock()

    def local(theta, *, generator=None):
        with lock:
            return theta

    with pytest.raises(ValueError, match=r"simulator .*cannot be pickled.*top level of an importable module"):
        simgen.simulate(local, PRIOR, 10, workers=2, progress=False)


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0")
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def test_dask_client_and_address_equal_in_process(dask_client, tmp_path):
    for sim in (flaky, plain):
        assert _equal(_run(sim, executor=dask_client), _run(sim))
    address = dask_client.scheduler.address
    assert _equal(_run(noisy, executor=address, store=tmp_path / "s.h5"), _run(noisy))
    assert dask_client.status == "running"  # a client the user passed is not closed


def test_dask_local_cluster_of_processes_equals_in_process():
    pytest.importorskip("distributed")
    executor = Dask(workers=2)
    try:
        assert executor.workers == 2
        assert _equal(_run(noisy, executor=executor), _run(noisy))
    finally:
        executor.close()
