"""Where the per-run analyses run: one small interface, several engines.

The pipeline hands an :class:`Executor` one picklable task and the list of runs; the executor
yields ``(index, outcome)`` once per run as runs finish (in any order), where the outcome is the
task's result or the exception that ended it. The batch stage always runs in the caller's
process. Engines: in this process (:class:`SequentialExecutor`, :class:`ThreadExecutor`), a
local process pool (:class:`ProcessExecutor`, ``--jobs N``) and a Ray cluster
(:class:`RayExecutor`, ``--ray [ADDRESS]``; Ray is imported only there). Another engine (Dask,
Spark) is one more class with a ``map``.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import (
    FIRST_COMPLETED,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from concurrent.futures import Executor as _Pool
from typing import Any, Protocol, TypeVar

from gradlog.errors import ConfigError, GradlogError

T = TypeVar("T")
R = TypeVar("R")

Outcome = Any
"""A task's result, or the ``BaseException`` that ended it."""


class ClusterError(GradlogError):
    """The cluster cannot be reached or used (no Ray installed, wrong address, cluster down)."""


class Executor(Protocol):
    """Runs one task per item somewhere and reports each item's outcome exactly once."""

    name: str

    @property
    def workers(self) -> int:
        """How many runs it analyses at once."""
        ...

    def map(self, task: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[int, Outcome]]:
        """``(index into items, task(item) or the exception it raised)``, as tasks finish."""
        ...

    def close(self) -> None:
        """Release what the executor started (pools, a cluster connection it opened)."""
        ...


class SequentialExecutor:
    """One run after another in this process."""

    name = "sequential"

    @property
    def workers(self) -> int:
        return 1

    def map(self, task: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[int, Outcome]]:
        for i, item in enumerate(items):
            try:
                out: Outcome = task(item)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:
                out = exc
            yield i, out

    def close(self) -> None:
        pass


def _drain(
    pool: _Pool, task: Callable[[T], R], items: Sequence[T], inflight: int
) -> Iterator[tuple[int, Outcome]]:
    """Keep ``inflight`` tasks submitted to ``pool``; yield each outcome as it completes."""
    pending: dict[Future[R], int] = {}
    todo = iter(enumerate(items))
    try:
        while True:
            for i, item in todo:
                try:
                    pending[pool.submit(task, item)] = i
                except RuntimeError as exc:  # a broken or shut-down pool refuses new tasks
                    yield i, exc
                    continue
                if len(pending) >= inflight:
                    break
            if not pending:
                return
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                i = pending.pop(fut)
                err = fut.exception()
                yield i, (err if err is not None else fut.result())
    finally:
        for fut in pending:
            fut.cancel()


class ThreadExecutor:
    """``workers`` runs at once on threads of this process (polars and numpy release the GIL)."""

    name = "threads"

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ConfigError(f"jobs must be at least 1, got {workers}")
        self._workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers)

    def map(self, task: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[int, Outcome]]:
        return _drain(self._pool, task, items, 2 * self.workers)

    @property
    def workers(self) -> int:
        return self._workers

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class ProcessExecutor:
    """``jobs`` worker processes on this machine (``--jobs N``); tasks and results are pickled.

    Workers are spawned (not forked: polars' thread pool does not survive a fork). A worker that
    dies takes its run with it: that run's outcome is the error, the pool is rebuilt for the rest.
    """

    name = "processes"

    def __init__(self, jobs: int) -> None:
        if jobs < 1:
            raise ConfigError(f"jobs must be at least 1, got {jobs}")
        self._workers = jobs
        self._pool: ProcessPoolExecutor | None = None

    @property
    def workers(self) -> int:
        return self._workers

    def _fresh(self) -> ProcessPoolExecutor:
        if self._pool is None:
            ctx = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx)
        return self._pool

    def map(self, task: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[int, Outcome]]:
        from concurrent.futures.process import BrokenProcessPool

        left, inflight = list(range(len(items))), 2 * self.workers
        while left:
            broken: list[int] = []
            for j, out in _drain(self._fresh(), task, [items[i] for i in left], inflight):
                if isinstance(out, BrokenProcessPool):
                    broken.append(left[j])
                else:
                    yield left[j], out
            if not broken:
                return
            self.close()  # a dead worker breaks the whole pool
            if inflight == 1:  # one run at a time: the run that was running killed its worker
                yield broken[0], RuntimeError("its worker process died (killed or out of memory)")
                broken = broken[1:]
            left, inflight = broken, 1  # the runs caught in the break again, one at a time

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _ray() -> Any:
    """The ``ray`` module, imported on first use (gradlog works without it)."""
    try:
        return importlib.import_module("ray")
    except ImportError as exc:
        raise ClusterError(
            "--ray needs Ray: pip install 'ray>=2.9' (gradlog's [ray] extra)"
        ) from exc


class RayExecutor:
    """Each run is a Ray task on the cluster at ``address`` (``auto``, ``ray://host:port`` or a
    head's ``host:port``; None: ``RAY_ADDRESS``, else a new local instance).

    Every node must read the runs at the same paths (shared storage). A task whose worker dies is
    retried by Ray (``retries`` times); a task that still fails gives that run's error. The
    connection is opened here and closed by :meth:`close` (unless Ray was initialised already).
    """

    name = "ray"

    def __init__(self, address: str | None = "auto", *, retries: int = 3, cpus: float = 1) -> None:
        self.address = address
        self.retries = retries
        self.cpus = cpus
        ray = _ray()
        self._owned = not ray.is_initialized()
        if self._owned:
            _probe(address or os.environ.get("RAY_ADDRESS"))
            try:
                ray.init(address=address, logging_level="ERROR", log_to_driver=False)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:
                where = address or os.environ.get("RAY_ADDRESS") or "a new local instance"
                raise ClusterError(
                    f"cannot reach the Ray cluster at {where}: {type(exc).__name__}: {exc!s:.300}"
                    " (is it running? `ray status` on the head shows it; pass --ray HOST:PORT)"
                ) from exc

    @property
    def workers(self) -> int:
        """Tasks the cluster runs at once now (its CPUs over the CPUs a task asks for)."""
        cpus_total = float(_ray().cluster_resources().get("CPU", 1.0))
        return max(1, int(cpus_total // max(self.cpus, 1e-9)))

    def map(self, task: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[int, Outcome]]:
        ray = _ray()
        remote = ray.remote(num_cpus=self.cpus, max_retries=self.retries, retry_exceptions=False)(
            _call
        )
        fn = ray.put(task)
        refs = {remote.remote(fn, item): i for i, item in enumerate(items)}
        try:
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1)
                for ref in ready:
                    i = refs.pop(ref)
                    try:
                        out: Outcome = ray.get(ref)
                    except (KeyboardInterrupt, SystemExit):
                        raise
                    except BaseException as exc:
                        out = _cause(exc)
                    yield i, out
        finally:
            for ref in refs:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._owned:
            _ray().shutdown()
            self._owned = False


def _probe(address: str | None, timeout: float = 5.0) -> None:
    """Fail fast, with a clear message, when nothing listens at a head's ``host:port`` (Ray's own
    connection attempt would wait a minute or more); other address forms are left to Ray."""
    if not address or address in ("auto", "local") or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return
    except (OSError, ValueError) as exc:
        raise ClusterError(
            f"cannot reach the Ray cluster at {address}: {exc} (is its head running? "
            "`ray start --head` starts one; `ray status` shows it)"
        ) from exc


def _call(task: Callable[[T], R], item: T) -> R:
    """The Ray task: ``task(item)`` on a worker."""
    return task(item)


def _cause(exc: BaseException) -> BaseException:
    """The task's own exception inside a Ray error, where Ray kept it."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def make_executor(jobs: int | None = None, ray: str | None = None) -> Executor | None:
    """The executor the CLI options ask for: ``--ray [ADDRESS]``, else ``--jobs N`` (processes;
    1: sequential), else None (the pipeline's default: two runs at once on threads)."""
    if ray is not None and jobs is not None:
        raise ConfigError("give either --jobs or --ray, not both")
    if ray is not None:
        return RayExecutor(ray or "auto")
    if jobs is None:
        return None
    return SequentialExecutor() if jobs == 1 else ProcessExecutor(jobs)
