"""Distributed training: the store's all-gather and DDP's step (against one process)
under a real gloo group (no Ray), and s2l-train on real Ray clusters: digests equal on
every rank, a worker killed with SIGKILL, a driver started again with --resume, a
cluster from `ray start` (one run in stages, one test per scenario)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _auto_threshold import check_cut, forest_share
from _gloo import free_port, run_ranks

from s2l_tools.cli import train
from s2l_tools.training.checkpoint import load_checkpoint
from s2l_tools.errors import S2LError

TINY = ["--encoder", "resnet18", "--crop", "32", "--batch-size", "4", "--samples-per-epoch",
        "4", "--warmup-epochs", "1", "--ensemble-every", "1", "--checkpoint-every", "2",
        "--tile", "64", "--panel-images", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def data(demo_train):
    return demo_train


# ------------------------------------------------------------ gloo, no Ray
def _ensemble(data_dir, *, ctx, perturb=False, sharded=False, check=False):
    from s2l_tools.training._faults import check_same_store
    from s2l_tools.training.config import TrainConfig
    from s2l_tools.training.data import load_training_data
    from s2l_tools.training.ema import EmaStore
    from s2l_tools.training.engine import _build, ensemble_step

    cfg = TrainConfig(data=str(data_dir), encoder="resnet18", tile=64, seed=5)
    data = load_training_data(cfg.data)
    model, _ = _build(cfg, data.in_channels, torch.device("cpu"))
    if perturb:  # another rank's BatchNorm statistics drift in training: sync_buffers fixes it
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean += 0.5
    owned = None
    if sharded:
        from s2l_tools.training.data import store_owners

        owners = store_owners(TrainConfig(store="sharded"), data.shapes, ctx.world_size)
        owned = [i for i, o in enumerate(owners) if o == ctx.rank]
    store = EmaStore(data.shapes, alpha=0.2, owned=owned)
    rows = []
    for _ in range(2):
        rows.append(ensemble_step(model, store, data, ctx, device=torch.device("cpu"),
                                  amp_dtype=None, tile=64))
        if check:  # every rank's store the same after the sync (RuntimeError if not)
            check_same_store(ctx, store)
    return store, rows


def _store_work(rank, data_dir):
    import s2l_tools.training.distributed as D

    D._GATHER_CHUNK = 64 * 64 * 2  # one image per round: exercise the rounds
    store, rows = _ensemble(data_dir, ctx=D.TorchDistContext(), perturb=rank == 1, check=True)
    shard, shard_rows = _ensemble(data_dir, ctx=D.TorchDistContext(), perturb=rank == 1,
                                  sharded=True)
    return {"ema": store.state_dict(), "digest": store.digest(), "rows": rows,
            "shard": shard.state_dict(), "shard_rows": shard_rows}


def test_sync_store_equals_single_process(data, tmp_path):
    """2 ranks, each predicting its share, end with the store 1 process computes alone."""
    from s2l_tools.training.engine import Context

    ranks = run_ranks(_store_work, str(data), out=tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks: a float sum's order may depend on the threads
    try:
        single, rows = _ensemble(data, ctx=Context())
    finally:
        torch.set_num_threads(threads)
    want = single.state_dict()
    assert want["n_updates"].tolist() == [2, 2, 2]
    for rank in (0, 1):
        got = ranks[rank]
        assert got["digest"] == single.digest()
        assert torch.equal(got["ema"]["maps"], want["maps"])  # pixel for pixel
        assert torch.equal(got["ema"]["n_updates"], want["n_updates"])
        assert [r.keys() for r in got["rows"]] == [r.keys() for r in rows]
        for a, b in zip(got["rows"], rows):
            assert a["train_iou"] == pytest.approx(b["train_iou"], abs=1e-12)
    # sharded: each rank predicted and kept only its images, nothing was gathered, and
    # the shards together are the single process's store, pixel for pixel
    from s2l_tools.training.ema import EmaStore

    union = EmaStore(single.shapes, alpha=0.2)
    held = []
    for rank in (0, 1):
        got = ranks[rank]
        assert 0 < len(got["shard"]["owned"]) < 3
        held += union.load_state_dict(got["shard"])
        for a, b in zip(got["shard_rows"], rows):  # the ranks' mean IoU: the same scores
            assert a["train_iou"] == pytest.approx(b["train_iou"], abs=1e-12)
    assert sorted(held) == [0, 1, 2] and union.digest() == single.digest()


def _tiny_net() -> torch.nn.Module:
    """A small network without BatchNorm: its gradient on a batch is the mean of its halves'."""
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 2, 3, padding=1))


def _step_batch() -> dict:
    g = torch.Generator().manual_seed(7)
    # every pixel scribbled (1 or 2): each half's mean loss is over as many pixels, so
    # the mean of the two halves' means is the whole batch's mean
    return {"image": torch.rand(4, 1, 16, 16, generator=g),
            "scribble": torch.randint(1, 3, (4, 16, 16), generator=g).to(torch.uint8)}


def _two_steps(ctx, batch) -> dict:
    from s2l_tools.training.step import train_step

    net = _tiny_net()
    model = ctx.wrap_model(net)
    opt = torch.optim.RAdam(net.parameters(), lr=1e-2)
    for _ in range(2):  # the second step starts where the first's averaged update left it
        train_step(model, opt, batch, method="pce", use_pseudo=False, device="cpu")
    return {"grads": [p.grad.clone() for p in net.parameters()],
            "params": [p.detach().clone() for p in net.parameters()]}


def _ddp_work(rank):
    import s2l_tools.training.distributed as D

    world = 2
    batch = {k: v[rank::world] for k, v in _step_batch().items()}  # this rank's half
    return {c: _two_steps(D.TorchDistContext(compress=c), batch) for c in D.COMPRESS}


def test_ddp_step_equals_single_process(tmp_path):
    """2 ranks with half the batch each end two train_steps where 1 process with all of it
    ends: with float32 gradients to float rounding (1e-6 of the largest gradient); rounded
    to float16 / bfloat16 for the exchange, within 2**-9 / 2**-6 of it."""
    import s2l_tools.training.distributed as D
    from s2l_tools.training.engine import Context

    ranks = run_ranks(_ddp_work, out=tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        want = _two_steps(Context(), _step_batch())
    finally:
        torch.set_num_threads(threads)
    tol = {"none": 1e-6, "fp16": 2.0 ** -9, "bf16": 2.0 ** -6}
    for c in D.COMPRESS:
        for key in ("grads", "params"):
            for a, b, w in zip(ranks[0][c][key], ranks[1][c][key], want[key]):
                assert torch.equal(a, b), (c, key)  # the ranks agree bit for bit
                scale = max(float(g.abs().max()) for g in want["grads"])
                bound = tol[c] * scale
                if key == "params":  # moved by lr * (the gradient's error) in each of 2 steps
                    bound = 2 * 1e-2 * bound + 1e-6 * float(w.abs().max())
                assert float((a - w).abs().max()) <= bound, (c, key)
    # the compression did round: not the float32 result bit for bit
    assert not all(torch.equal(a, b) for a, b in zip(ranks[0]["bf16"]["grads"],
                                                      ranks[0]["none"]["grads"]))


def test_compress_setting_is_checked():
    from s2l_tools.training.distributed import COMPRESS, _check_compress

    assert [_check_compress(c) for c in COMPRESS] == ["none", "fp16", "bf16"]
    with pytest.raises(S2LError, match="compress True: not a gradient precision; use one of "
                                       "none, fp16, bf16"):
        _check_compress(True)  # the bool the option was before


def test_storage_checks():
    from s2l_tools.training.distributed import _storage, check_shared_storage
    from s2l_tools.training.rundir import is_uri

    check_shared_storage("/shared/run", {"10.0.0.1": True, "10.0.0.2": True})
    with pytest.raises(S2LError, match="10.0.0.2 cannot see; on a multi-node cluster"):
        check_shared_storage("/local/run", {"10.0.0.1": True, "10.0.0.2": False})
    assert _storage("s3://bucket/runs/first") == ("s3://bucket/runs", "first")
    assert is_uri("gs://b/r") and not is_uri("/tmp/r")
    parent, name = _storage("rel/run")
    assert os.path.isabs(parent) and name == "run"
    with pytest.raises(S2LError, match="needs a parent"):
        _storage("s3://bucket")


# ------------------------------------------------------------------- Ray
def _kill_tree(proc):
    import contextlib

    import psutil

    try:
        procs = [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        procs = []
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=15)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)  # reap it: no "subprocess is still running" warning later


def _latest(run: Path) -> dict:
    ckpts = sorted(run.glob("checkpoint_epoch_*/checkpoint.pt"))
    return load_checkpoint(ckpts[-1])


# One run, in stages that build on each other: (a) 2 workers on a private local Ray, rank 1
# killed in epoch 3; (b) a second start refused; (c) a user error on a `ray start` cluster;
# (d) the run resumed there with a sharded store; (e) continued in one process. The stages
# are module-scoped fixtures, so each test names one scenario and nothing runs twice.
@pytest.fixture(scope="module")
def ray_env(tmp_path_factory):
    """The environment of every Ray stage (as one test's monkeypatch had it)."""
    pytest.importorskip("ray")
    marker = tmp_path_factory.mktemp("fault") / "killed"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "disabled")  # no ~/.ray/auth_token from tests
        mp.setenv("S2L_CHECK_STORE", "1")  # every epoch: digests equal on all ranks
        mp.setenv("S2L_TEST_FAULT", f"1:3:{marker}")  # rank 1 SIGKILLs itself at epoch 3
        yield marker


@pytest.fixture(scope="module")
def fault_run(data, ray_env, tmp_path_factory):
    """(a): 4 epochs on 2 workers of a private local Ray; rank 1 dies in epoch 3, the group
    restarts from the epoch-2 checkpoint and finishes with the store continued."""
    run = tmp_path_factory.mktemp("ray") / "run"
    t0 = time.perf_counter()
    rc = train.main([str(data), "--out", str(run), "--epochs", "4", "--num-workers", "2",
                     "--max-failures", "1", "--auto-threshold", "--mask-threshold", "0.05",
                     *TINY])
    print(f"run with a fault: {time.perf_counter() - t0:.1f} s")
    assert rc == 0
    return run


@pytest.fixture(scope="module")
def ray_cluster(ray_env):
    """A cluster started by `ray start` (port), stopped after the module."""
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    ray_bin = str(Path(sys.executable).parent / "ray")
    head = subprocess.Popen([ray_bin, "start", "--head", "--block", "--node-ip-address",
                             "127.0.0.1", "--port", str(port), "--num-cpus", "2",
                             "--include-dashboard=false", "--disable-usage-stats"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        yield port
    finally:
        _kill_tree(head)


@pytest.fixture(scope="module")
def cluster_resume(fault_run, ray_cluster):
    """(d): the driver starts again with --resume on the `ray start` cluster and continues
    the same run, named by a URI (file:// here; s3:// and gs:// go the same way), from its
    latest checkpoint, with the store now sharded: each worker takes its share of the
    replicated checkpoint's maps and from here keeps, predicts and saves only those."""
    t0 = time.perf_counter()
    rc = train.main(["--out", f"file://{fault_run}", "--resume", "--epochs", "5", "--address",
                     f"127.0.0.1:{ray_cluster}", "--store", "sharded"])
    print(f"resumed run on a `ray start` cluster: {time.perf_counter() - t0:.1f} s")
    assert rc == 0
    return fault_run


@pytest.mark.ray
def test_ray_worker_killed_group_restarts_from_checkpoint(fault_run, ray_env, data):
    assert ray_env.exists()  # rank 1 did kill itself
    ck = _latest(fault_run)
    # --auto-threshold: the workers' summed counts cut where one process cuts (the maps
    # of these few steps are all but 0 / 1: tests/test_auto_threshold.py checks the share)
    assert ck["meta"]["threshold"] == check_cut(fault_run, data, interior=False)
    assert ck["forest_share"] == pytest.approx(forest_share(data), abs=1e-12)
    assert ck["epoch"] == 4 and ck["ema"]["n_updates"].tolist() == [3, 3, 3]
    assert [r["epoch"] for r in ck["history"]] == [1, 2, 3, 4]
    for name in ("model.pt", "metrics.csv", "curves.png", "config.json", "panels/epoch_0003.png"):
        assert (fault_run / name).stat().st_size > 0, name
    assert len((fault_run / "metrics.csv").read_text().splitlines()) == 5
    assert len(list(fault_run.glob("checkpoint_epoch_*"))) == 2  # num_to_keep


@pytest.mark.ray
def test_ray_ranks_report_the_same_store_digest(fault_run):
    from s2l_tools.training.ema import EmaStore

    ck = _latest(fault_run)
    store = EmaStore([tuple(s) for s in ck["ema"]["shapes"].tolist()])
    store.load_state_dict(ck["ema"])
    snapshot = (fault_run / "checkpoint_manager_snapshot.json").read_text()
    assert store.digest() in snapshot  # rank 0 reported the digest the ranks agreed on


@pytest.mark.ray
def test_ray_second_start_without_resume_is_refused(fault_run, data):
    assert train.main([str(data), "--out", str(fault_run), "--num-workers", "2",
                       *TINY]) == 1


@pytest.mark.ray
def test_ray_user_error_on_cluster_is_one_line_without_retry(fault_run, ray_cluster, capsys):
    """(c): a user error on the workers comes back as one line, without Ray retrying it."""
    t0 = time.perf_counter()
    assert train.main(["--out", f"file://{fault_run}", "--resume", "--epochs", "5", "--method",
                       "pce", "--address", f"127.0.0.1:{ray_cluster}"]) == 1
    assert "trained with method s2l" in capsys.readouterr().err
    print(f"user error on a `ray start` cluster: {time.perf_counter() - t0:.1f} s")


@pytest.mark.ray
def test_ray_resume_on_cluster_with_uri_and_sharded_store(cluster_resume):
    run = cluster_resume
    ck = _latest(run)
    assert ck["epoch"] == 5 and ck["ema"] is None and ck["ema_shards"] == 2
    shards = sorted(run.glob("checkpoint_epoch_0005/ema_shard_*.pt"))
    assert len(shards) == 2  # one file per rank, merged by Ray into one checkpoint
    held, counts = [], np.zeros(3, int)
    for f in shards:
        st = load_checkpoint(f)["ema"]
        held += st["owned"].tolist()
        counts[st["owned"].numpy()] = st["n_updates"][st["owned"]].numpy()
    assert sorted(held) == [0, 1, 2] and counts.tolist() == [4, 4, 4]
    assert [r["epoch"] for r in ck["history"]] == [1, 2, 3, 4, 5]
    assert len((run / "metrics.csv").read_text().splitlines()) == 6
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["num_workers"] == 2 and cfg["epochs"] == 5 and cfg["store"] == "sharded"


@pytest.mark.ray
def test_ray_run_continued_in_one_process(cluster_resume, data, capsys):
    """(e): the Ray run continued in one process: its newest checkpoint, shards joined
    (started afresh in one process instead, it is refused, not overwritten)."""
    run = cluster_resume
    assert train.main([str(data), "--out", str(run), "--num-workers", "0", "--address", "",
                       *TINY]) == 1
    assert "--resume" in capsys.readouterr().err
    assert train.main(["--out", str(run), "--resume", "--epochs", "6", "--num-workers", "0",
                       "--address", ""]) == 0
    ck = load_checkpoint(run / "checkpoint.pt")
    assert ck["epoch"] == 6 and ck["ema"]["n_updates"].tolist() == [5, 5, 5]
    assert ck["meta"]["threshold"] == check_cut(run, data, interior=False)
    assert [r["epoch"] for r in ck["history"]] == [1, 2, 3, 4, 5, 6]
