"""Data-parallel training with gloo on CPU: 2 ranks reach the parameters of 1 process with the same global
batch, each reading only its own chunks of the store, rank 0 alone writing files."""

import io
import itertools
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributions import Independent, Uniform

import simgen
from simgen import PosteriorEstimator
from simgen.campaign.store import open_store
from simgen.estimators import ingest
from simgen.estimators.base import training_config
from simgen.training import StoreBatches

WORLD = 2
SETTINGS = dict(max_epochs=3, batch_size=64, patience=3)


def _prior():
    return Independent(Uniform(torch.zeros(2), torch.ones(2)), 1)


def _simulator(theta, generator=None):
    return theta + 0.1 * torch.randn(theta.shape, generator=generator)


def _pairs():
    g = torch.Generator().manual_seed(1)
    theta = torch.rand(503, 2, generator=g)  # the last batch splits unevenly over the ranks
    return theta, _simulator(theta, g)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, store_path: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    store = open_store(store_path)
    reads: list[tuple[int, tuple[str, ...]]] = []
    read_chunk = store.read_chunk

    def counted(k, keep=None, fields=None):
        reads.append((k, tuple(fields or ())))
        return read_chunk(k, keep, fields)

    store.read_chunk = counted
    saves: list[str] = []
    save = torch.save

    def counted_save(obj, f, *args, **kwargs):
        if not isinstance(f, io.BytesIO):  # torch.distributed pickles objects through BytesIO
            saves.append(str(getattr(f, "name", f)))
        return save(obj, f, *args, **kwargs)

    torch.save = counted_save
    try:
        est = PosteriorEstimator(_prior(), device="cpu")
        est.fit(store, seed=0, checkpoint=Path(out) / "fit.ckpt", **SETTINGS)
        in_memory = PosteriorEstimator(_prior(), device="cpu")
        in_memory.fit(*_pairs(), seed=0, **SETTINGS)
        resumed = _preempted_and_resumed(store, Path(out) / "resumed.ckpt")
    finally:
        torch.save = save
    torch.save({"store": est.density.state_dict(), "store_history": est.history.to_dict(),
                "pairs": in_memory.density.state_dict(), "pairs_history": in_memory.history.to_dict(),
                "resumed": resumed.density.state_dict(), "resumed_history": resumed.history.to_dict(),
                "reads": reads, "saves": saves}, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


class _Preempted(Exception):
    pass


def _preempted_and_resumed(store, checkpoint):
    """Every rank stops in the second epoch (as a pre-empted job), then the fit is run again and resumes. The
    validations counted: the initial state's, the first epoch's, then the second's, where the job stops."""
    from simgen.training import trainer

    evaluate = trainer._evaluate_ranks
    calls = []

    def stop_in_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise _Preempted
        return evaluate(*args, **kwargs)

    trainer._evaluate_ranks = stop_in_second_epoch
    try:
        PosteriorEstimator(_prior(), device="cpu").fit(store, seed=0, checkpoint=checkpoint, **SETTINGS)
    except _Preempted:
        pass
    finally:
        trainer._evaluate_ranks = evaluate
    assert len(calls) == 3
    est = PosteriorEstimator(_prior(), device="cpu")
    est.fit(store, checkpoint=checkpoint, **SETTINGS)  # the seed comes from the checkpoint
    return est


class _Shards(StoreBatches):
    """What the ranks serve together, in one process: each step, the concatenation of every shard's batch."""

    def __init__(self, store, fraction, seed, per_buffer):
        self.parts = [StoreBatches(store, True, fraction, seed, per_buffer, shard=(r, WORLD)) for r in range(WORLD)]
        self.store, self.shard = store, None
        self.num_train = sum(p.num_train for p in self.parts)
        self.num_validation = sum(p.num_validation for p in self.parts)

    def iter_rows(self):
        return itertools.chain.from_iterable(p.iter_rows() for p in self.parts)

    def train_batches(self, batch_size, generator):
        shares = [batch_size // WORLD + (r < batch_size % WORLD) for r in range(WORLD)]
        steps = min(-(-p.num_train // b) for p, b in zip(self.parts, shares, strict=True))
        copies = [torch.Generator().set_state(generator.get_state()) for _ in self.parts]
        parts = [itertools.islice(p.train_batches(b, g), steps) for p, b, g in zip(self.parts, shares, copies,
                                                                                  strict=True)]
        for batches in zip(*parts, strict=True):
            yield torch.cat([y for y, _ in batches]), torch.cat([c for _, c in batches])
        generator.set_state(copies[0].get_state())

    def validation_batches(self, batch_size):
        return itertools.chain.from_iterable(p.validation_batches(batch_size) for p in self.parts)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    store_path = root / "runs.h5"
    simgen.simulate(_simulator, _prior(), 650, seed=0, chunk_size=100, progress=False, store=store_path,
                    return_data=False)
    out = root / "out"
    out.mkdir()
    mp.spawn(_worker, args=(_free_port(), str(store_path), str(out)), nprocs=WORLD, join=True)
    return store_path, out, [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def _assert_close(a, b):
    for (name, x), y in zip(a.items(), b.values(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-3, atol=5e-4, msg=name)


def test_two_ranks_match_one_process_with_the_same_global_batch(runs):
    store_path, _, ranks = runs
    torch.manual_seed(0)
    # the replicas agree with each other
    _assert_close(ranks[0]["store"], ranks[1]["store"])
    assert ranks[0]["store_history"]["validation_loss"] == ranks[1]["store_history"]["validation_loss"]
    # streamed from the store: one process serving both shards' rows in the same global batches
    est = PosteriorEstimator(_prior(), device="cpu")
    store = open_store(store_path)
    est.theta_shape, est.x_shape, est.x_kind = (2,), (2,), "vector"
    config = training_config(None, SETTINGS, est.training_defaults())
    source = _Shards(store, config.validation_fraction, 0, ingest.rows_fit_in_memory(store, 2, None)[1])
    est._fit(source, config, 0, False, {})
    _assert_close(ranks[0]["store"], est.density.state_dict())
    assert ranks[0]["store_history"]["validation_loss"] == pytest.approx(est.history.validation_loss, rel=1e-5)
    assert ranks[0]["store_history"]["num_train"] == est.history.num_train == source.num_train
    # from tensors every rank holds: the plain one-process fit
    plain = PosteriorEstimator(_prior(), device="cpu")
    plain.fit(*_pairs(), seed=0, progress=False, **SETTINGS)
    _assert_close(ranks[0]["pairs"], plain.density.state_dict())
    assert ranks[0]["pairs_history"]["validation_loss"] == pytest.approx(plain.history.validation_loss, rel=1e-5)


def test_preempted_ranks_resume_to_the_uninterrupted_result(runs):
    _, _, ranks = runs
    for rank in ranks:
        assert rank["resumed_history"]["validation_loss"] == rank["store_history"]["validation_loss"]
        _assert_close(rank["resumed"], rank["store"])


def test_each_rank_reads_only_its_chunks(runs):
    store_path, _, ranks = runs
    chunks = [k for k, _ in open_store(store_path).visible_chunks()]
    rows = [{k for k, fields in r["reads"] if "x" in fields} for r in ranks]
    assert rows == [set(chunks[r::WORLD]) for r in range(WORLD)]


def test_only_rank_zero_writes(runs):
    _, out, ranks = runs
    assert ranks[0]["saves"] and all(Path(s).name.startswith((".fit.ckpt.", ".resumed.ckpt.")) and s.endswith(".tmp")
                                     for s in ranks[0]["saves"])
    assert ranks[1]["saves"] == []
    assert sorted(p.name for p in out.iterdir()) == ["fit.ckpt", "rank0.pt", "rank1.pt", "resumed.ckpt"]


def test_simgen_train_nproc_launches_torchrun_and_rank_zero_writes(tmp_path, capfd):
    from simgen.cli import main

    store = tmp_path / "runs.h5"
    assert main(["simulate", "--simulator", "two_moons", "--num", "400", "--chunk-size", "100", "--store",
                 str(store), "--quiet"]) == 0
    model = tmp_path / "post.pt"
    assert main(["train", "--store", str(store), "--out", str(model), "--nproc", "2", "--max-epochs", "2",
                 "--batch-size", "64", "--threads", "1", "--device", "cpu", "--checkpoint",
                 str(tmp_path / "fit.ckpt")]) == 0
    out = capfd.readouterr().out
    assert out.count(f"wrote {model}") == 1 and "2 processes" in out
    post = simgen.load(model)
    assert post.history.epochs == 2 and post.history.num_train + post.history.num_validation == 400
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.ckpt", "post.pt", "runs.h5"]


def test_config_key_training_nproc():
    from simgen.config import ConfigError, parse_config

    config, _ = parse_config('simulator = "two_moons"\n[posterior]\ntraining = { nproc = 2, max_epochs = 7 }\n'
                             '[likelihood]\ntraining = { nproc = 3 }\n')
    assert config.posterior.nproc == 2 and config.posterior.training["max_epochs"] == 7
    assert "nproc" not in config.posterior.training and "nproc" not in config.likelihood.training
    assert config.likelihood.nproc == 3
    assert parse_config('simulator = "two_moons"\n')[0].posterior.nproc == 1
    with pytest.raises(ConfigError, match=r"posterior\.training\.nproc"):
        parse_config('simulator = "two_moons"\n[posterior]\ntraining = { nproc = 0 }\n')
