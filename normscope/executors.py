"""Units of work on a cluster, through an existing engine (Dask): connect, map in order, retry.

The unit of work is a picklable module-level function of one input: "measure one checkpoint"
for `series` (`functools.partial(series._measure_one, options=...)` over paths), "reduce one
tensor set" for `fold`. `cluster(spec)` connects to a running Dask scheduler (`--cluster
ADDRESS`, else `$DASK_SCHEDULER_ADDRESS`) or starts a local cluster of worker processes, and
`Cluster.map_ordered` runs the units there, yielding results in input order with at most
`window` units submitted and not yet consumed (so a series holds the same few results in
memory as on one machine), and nothing else: no scheduling of its own.

Failures: a unit whose worker dies (killed, out of memory, node lost) is submitted again, at
most `retries` times; one that still fails yields `Lost(reason)` in its place — the caller
reports it (a series lists it in `skipped`), it is never dropped. An exception raised by the
unit itself is the unit's result to handle (series' `_measure_one` returns its errors), so one
that escapes is a bug and is raised. Losing the scheduler is an error of the whole run.

Why Dask first (ARCHITECTURE.md has the measurements): a local 2-worker cluster starts in
0.9 s against Ray's 3-4 s here, the failure of a unit is an exception naming it (`KilledWorker`)
that the client can count and retry, and `distributed` is a pure-Python install that HPC
(SLURM/PBS through dask-jobqueue) and Kubernetes (dask-kubernetes) sites already run. Ray is
the natural second engine (KubeRay training clusters); it fits the same `Cluster` interface.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from normscope.errors import SourceError, UsageError

__all__ = ["ADDRESS_ENV", "Cluster", "ClusterSpec", "Lost", "cluster"]

ADDRESS_ENV = "DASK_SCHEDULER_ADDRESS"
"""Dask's own variable for the scheduler to connect to (`dask.config` key `scheduler-address`)."""

_In = TypeVar("_In")
_Out = TypeVar("_Out")


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """Where units of work run."""

    address: str | None = None
    """A Dask scheduler (`tcp://host:8786`); None: `$DASK_SCHEDULER_ADDRESS`, else a local one."""
    workers: int | None = None
    """Worker processes of a local cluster (one thread each); None: min(4, CPUs)."""
    retries: int = 2
    """Times a unit whose worker was lost is submitted again before it is reported `Lost`."""
    connect_timeout: float = 10.0
    """Seconds to wait for an existing scheduler to answer."""


@dataclass(frozen=True, slots=True)
class Lost:
    """A unit that failed on the cluster after its retries, and why."""

    reason: str


class Cluster(Generic[_In, _Out]):
    """A connected Dask client; `map_ordered` runs units of work on its workers."""

    def __init__(self, client: Any, spec: ClusterSpec, where: str) -> None:
        self.client = client
        self.spec = spec
        self.where = where
        """The scheduler's address, or `a local cluster of N workers`."""

    @property
    def slots(self) -> int:
        """Units that run at once: the workers' threads together."""
        return max(1, sum(self.client.nthreads().values()))

    def map_ordered(
        self, unit: Callable[[_In], _Out], inputs: Sequence[_In], window: int | None = None
    ) -> Iterator[_Out | Lost]:
        """`unit(x)` for each input, on the workers; results (or `Lost`) in input order."""
        from distributed import wait
        from distributed.scheduler import KilledWorker

        window = max(1, window or 2 * self.slots)
        pending: dict[Any, tuple[int, int]] = {}  # future -> (index, attempt)
        finished: dict[int, _Out | Lost] = {}
        submitted = consumed = 0
        try:
            while consumed < len(inputs):
                while submitted < len(inputs) and len(pending) + len(finished) < window:
                    pending[self._submit(unit, inputs[submitted])] = (submitted, 0)
                    submitted += 1
                if consumed not in finished:
                    with self.client.as_current():
                        done, _ = wait(list(pending), return_when="FIRST_COMPLETED")
                    for future in done:
                        index, attempt = pending.pop(future)
                        try:
                            finished[index] = future.result()
                        except KilledWorker as exc:
                            if attempt < self.spec.retries:
                                pending[self._submit(unit, inputs[index])] = (index, attempt + 1)
                            else:
                                finished[index] = Lost(_lost_reason(exc, attempt + 1))
                        finally:
                            future.release()
                while consumed in finished:
                    yield finished.pop(consumed)
                    consumed += 1
        except (OSError, TimeoutError) as exc:
            raise SourceError(f"lost the Dask scheduler: {exc} ({self.where})") from None
        finally:
            for future in pending:
                future.cancel()

    def _submit(self, unit: Callable[[_In], _Out], item: _In) -> Any:
        return self.client.submit(unit, item, pure=False)


def _lost_reason(exc: BaseException, attempts: int) -> str:
    cause = str(exc).split("\n")[0][:160]
    return (
        f"its worker was lost {attempts} time(s) while running it (killed, out of memory, or its "
        f"node went away): {type(exc).__name__}: {cause}"
    )


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """The engine's own log lines (a worker restarted, a task failed) are not normscope's output:
    the outcome reaches the report. Restored on exit."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(before)


@contextlib.contextmanager
def cluster(spec: ClusterSpec) -> Iterator[Cluster[Any, Any]]:
    """Connect to the scheduler of `spec` (or `$DASK_SCHEDULER_ADDRESS`), or start a local
    cluster that is shut down on exit. Raises UsageError when the engine is not installed or the
    scheduler cannot be reached."""
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError:
        raise UsageError(
            'the dask executor needs the dask extra: pip install "normscope[dask]"',
            param="--executor",
        ) from None
    address = spec.address or dask.config.get("scheduler-address", None)
    # The client resubmits units whose worker died (`map_ordered`), so the local scheduler fails
    # them at the first death instead of retrying on its own; an existing cluster keeps its
    # `distributed.scheduler.allowed-failures` (the retries multiply).
    # NOTE: worker-saturation 1.0: a worker holds only the units it runs, the rest wait at the
    # scheduler; with dask's default (1.1) a 1-thread worker also holds a queued unit, which
    # dies with the worker and is charged a loss that another unit caused.
    settings = {
        "distributed.scheduler.allowed-failures": 0,
        "distributed.scheduler.worker-saturation": 1.0,
        "distributed.admin.tick.limit": "60s",
    }
    with contextlib.ExitStack() as stack:
        stack.enter_context(dask.config.set(settings))
        stack.enter_context(_quiet("distributed"))
        if address:
            try:
                client = stack.enter_context(
                    Client(address, timeout=spec.connect_timeout, set_as_default=False)
                )
            except (OSError, TimeoutError) as exc:
                raise UsageError(
                    f"cannot connect to the Dask scheduler: {exc} ({address})", param="--cluster"
                ) from None
            where = str(address)
        else:
            cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
            workers = spec.workers or min(4, cpus or os.cpu_count() or 1)
            local = stack.enter_context(
                LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",  # never the busy default 8787 (a warning)
                    scheduler_port=0,
                    silence_logs=logging.CRITICAL,
                )
            )
            client = stack.enter_context(Client(local, set_as_default=False))
            where = f"a local cluster of {workers} workers"
        yield Cluster(client, spec, where)
