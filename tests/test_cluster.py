"""The cluster executor on a local 2-worker Dask cluster: the same series as the local executor,
a worker killed mid-run (the unit retried), and a unit that keeps killing its worker (reported in
`skipped`, never dropped). Skipped with the reason where a local cluster cannot start.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from s3server import S3
from typer.testing import CliRunner

from normscope.cli import app
from normscope.errors import UsageError
from normscope.executors import Cluster, ClusterSpec, Lost, cluster
from normscope.schema import Executor
from normscope.series import SeriesOptions, measure_series

# `normscope.series` is the API function; the module is reached by its full name.
series_module = importlib.import_module("normscope.series")

pytest.importorskip("distributed", reason="needs the dask extra (distributed)")
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
runner = CliRunner()


@pytest.fixture(scope="module")
def engine() -> Iterator[Cluster[Any, Any]]:
    """One local cluster of 2 worker processes for the module (about 1 s to start)."""
    try:
        context = cluster(ClusterSpec(workers=2, retries=2))
        started = context.__enter__()
    except Exception as exc:  # a sandbox without sockets or process spawning
        pytest.skip(f"cannot start a local Dask cluster here: {type(exc).__name__}: {exc}")
    try:
        yield started
    finally:
        context.__exit__(None, None, None)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """Six checkpoints of two kinds, named checkpoint-<step>."""
    for i, step in enumerate(range(0, 600, 100)):
        fixture = "llama-init" if i % 3 == 0 else "llama-trained"
        shutil.copytree(FIXTURES / fixture, tmp_path / "run" / f"checkpoint-{step}")
    return tmp_path / "run"


def _without_timings(text: str) -> dict[str, Any]:
    report = json.loads(text)
    report.pop("io")
    for checkpoint in report["checkpoints"]:
        checkpoint.pop("seconds")
    return dict(report)


def test_series_on_a_local_cluster_is_the_local_series(run_dir: Path) -> None:
    local = runner.invoke(app, ["series", str(run_dir), "-f", "json", "--executor", "local"])
    dask = runner.invoke(
        app, ["series", str(run_dir), "-f", "json", "--executor", "dask", "-j", "2"]
    )
    assert local.exit_code == 0 and dask.exit_code == 0, dask.stderr
    assert _without_timings(dask.stdout) == _without_timings(local.stdout)
    io = json.loads(dask.stdout)["io"]
    assert (io["executor"], io["jobs"]) == ("dask", 2)


def test_series_from_s3_on_the_cluster(s3: S3, run_dir: Path) -> None:
    url = s3.upload(run_dir, "run")
    # Each worker finds its credentials by the standard chain of its own node: here the AWS
    # variables this test set, which the local cluster's worker processes inherit.
    options = SeriesOptions(executor=Executor.dask, jobs=2)
    on_cluster = measure_series([url], options)
    here = measure_series([run_dir], SeriesOptions(executor=Executor.serial))
    assert [r.norm for r in on_cluster.rows] == [r.norm for r in here.rows]
    assert on_cluster.io.bytes_read == here.io.bytes_read
    assert on_cluster.io.jobs == 2


def test_progress_reports_every_checkpoint_in_order(
    run_dir: Path, engine: Cluster[Any, Any]
) -> None:
    events = []
    options = SeriesOptions(
        executor=Executor.dask, cluster=ClusterSpec(address=engine.client.scheduler.address)
    )
    measure_series([run_dir], options, events.append)
    assert [e.done for e in events] == list(range(7))
    assert [Path(e.path).name for e in events[1:]] == [
        f"checkpoint-{s}" for s in range(0, 600, 100)
    ]


def _die_once(marker: Path, value: int) -> int:
    """Kill this worker process the first time it is called for `value`; return value² after."""
    flag = marker / str(value)
    if value % 2 == 1 and not flag.exists():
        flag.touch()
        os._exit(1)
    return value * value


def test_a_killed_worker_is_retried(engine: Cluster[Any, Any], tmp_path: Path) -> None:
    unit = functools.partial(_die_once, tmp_path)
    results = list(engine.map_ordered(unit, list(range(6))))
    assert results == [0, 1, 4, 9, 16, 25]  # 1, 3, 5 killed their worker once, then ran again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "3", "5"]


def _die_always(value: int) -> int:
    if value == 3:
        os._exit(1)
    return value


@pytest.mark.slow
def test_a_unit_that_keeps_losing_its_worker_is_reported(engine: Cluster[Any, Any]) -> None:
    results = list(engine.map_ordered(_die_always, list(range(5))))
    assert results[:3] == [0, 1, 2] and results[4] == 4
    lost = results[3]
    assert isinstance(lost, Lost)
    assert lost.reason.startswith("its worker was lost 3 time(s) while running it")


def _crash_on_step_200(path: str, options: Any) -> Any:
    """`series._measure_one`, except that checkpoint-200 kills its worker every time."""
    if path.endswith("checkpoint-200"):
        os._exit(1)
    return series_module._measure_one(path, options)


@pytest.mark.slow
def test_a_series_reports_a_checkpoint_lost_on_the_cluster(
    run_dir: Path, engine: Cluster[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(series_module, "_measure_one", _crash_on_step_200)
    spec = ClusterSpec(address=engine.client.scheduler.address, retries=1)
    report = measure_series([run_dir], SeriesOptions(executor=Executor.dask, cluster=spec))
    assert [c.step for c in report.checkpoints] == [0, 100, 300, 400, 500]
    [skip] = report.skipped
    assert (Path(skip.path).name, skip.step) == ("checkpoint-200", 200)
    assert skip.reason.startswith("on the cluster, its worker was lost 2 time(s) while running it")
    assert any("skipped" in w and "checkpoint-200" in w for w in report.warnings)


def test_an_unreachable_scheduler_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = ClusterSpec(address="tcp://127.0.0.1:9", connect_timeout=0.5)
    with pytest.raises(UsageError, match=r"cannot connect to the Dask scheduler: .*127.0.0.1:9"):
        cluster(spec).__enter__()
    # The engine's own variable names the scheduler when --cluster is not given.
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://127.0.0.1:9")
    import dask

    dask.config.refresh()
    try:
        with pytest.raises(UsageError, match=r"127.0.0.1:9"):
            cluster(ClusterSpec(connect_timeout=0.5)).__enter__()
    finally:
        monkeypatch.delenv("DASK_SCHEDULER_ADDRESS")
        dask.config.refresh()


def test_cluster_needs_executor_dask_or_implies_it(run_dir: Path) -> None:
    result = runner.invoke(app, ["series", str(run_dir), "--cluster", " "])
    assert result.exit_code == 2
    assert "Invalid value for --cluster: empty address" in result.stderr


# --- fold: the matrices of one checkpoint, in tensor sets, as units ------------------------------


def _fold_json(text: str) -> dict[str, Any]:
    """A fold report without what depends on where and when it ran."""
    report = json.loads(text)
    report.pop("io")
    report.pop("plan")
    return dict(report)


def test_fold_on_a_local_cluster_is_the_local_fold(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from test_fold import deepseek, write

    ckpt = write(tmp_path, "ds", deepseek)
    args = ["fold", str(ckpt), "--device", "cpu", "-f", "json", "-q"]
    local = runner.invoke(app, args)
    dask = runner.invoke(app, [*args, "--executor", "dask"])
    assert local.exit_code == 0 and dask.exit_code == 0, dask.stderr
    assert _fold_json(dask.stdout) == _fold_json(local.stdout)
    assert json.loads(dask.stdout)["fold_summary"]["folded"] > 0


def _lose_the_head(unit: Any) -> Any:
    """`fold.distributed.reduce_unit`, except that a unit holding the output head kills its
    worker every time."""
    from normscope.fold import distributed

    if any(name == "lm_head.weight" for name, _, _ in unit.tensors):
        os._exit(1)
    return distributed.reduce_unit(unit)


@pytest.mark.slow
def test_a_fold_unit_lost_on_the_cluster_skips_its_norms(
    tmp_path: Path, engine: Cluster[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    from test_fold import deepseek, write

    from normscope.enums import FoldStatus
    from normscope.fold import FoldOptions, distributed, fold

    ckpt = write(tmp_path, "ds", deepseek)
    monkeypatch.setattr(distributed, "reduce_unit", _lose_the_head)
    spec = ClusterSpec(address=engine.client.scheduler.address, retries=1)
    report = fold(ckpt, FoldOptions(device="cpu", cluster=spec))
    final = next(n for n in report.norms if n.role.value == "final")
    assert final.status is FoldStatus.skipped and final.folded_ratio is None
    assert final.reason is not None and "lost on the cluster" in final.reason
    # The other units ran: norms that do not read the head were folded.
    assert any(n.status is FoldStatus.folded for n in report.norms)
