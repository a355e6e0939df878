"""`ParslPoolExecutor`: a drop-in for Parsl's ``parsl.concurrent.ParslPoolExecutor`` (``pip install 'aioflow[parsl]'``).

Switch by changing the import; the rest of the program stays as it is::

    from aioflow.parsl import ParslPoolExecutor  # was: from parsl.concurrent import ParslPoolExecutor

    with ParslPoolExecutor(config=config) as pool:
        assert pool.submit(f, pool.submit(f, 1)).result() == 3

It is `aioflow.Executor` on the ``parsl`` pool with Parsl's face: Parsl's
constructor (exactly one of ``config`` and ``dfk``, refused in Parsl's
words), one Parsl ``PythonApp`` per function (`get_app`, `app_count`),
made on the executor's DFK and ``executors``, through which every call of
that function goes (the parsl pool calls the app; see
``aioflow/pools/_parsl.py``), and ``map`` as Parsl's: every call submitted
at once, one per item. Its futures are inputs of Parsl's apps, and take
theirs, as with Parsl's class. With a ``config`` the executor loads its DFK
as it is made, and cleans it up when it shuts down; a ``dfk`` stays the
caller's, running after the executor has shut down.

What aioflow adds, and where it differs from Parsl's class:

- A call whose arguments include futures waits for them here, in
  aioflow's executor, and reaches Parsl (through its app) only once they
  have results: until then ``cancel`` succeeds, and cancels the calls
  waiting for it in turn. A call handed to Parsl counts as running: Parsl
  cannot cancel it. ``shutdown(cancel_futures=True)`` therefore warns, as
  Parsl's does, and cancels the calls still waiting for their
  dependencies.
- A failed dependency fails its dependents with `aioflow.DependencyError`,
  a lost worker is `aioflow.WorkerLostError` (Parsl's ``WorkerLost`` as its
  cause).
- ``shutdown(wait=False)`` returns at once, as the stdlib's: the calls
  submitted still run, and a DFK loaded from ``config`` is cleaned up once
  they have ended, in a thread (Parsl's class cleans it up at once).
  Leaving a ``with`` block shuts the executor down with either argument
  (Parsl's leaves one on a ``dfk`` open).
- As Parsl's class, it keeps each function's app, and so the function,
  as long as it lives (`aioflow.Executor` keeps none).

``import aioflow.parsl`` does not import parsl; making a `ParslPoolExecutor`
does, and raises `aioflow.MissingExtraError` without it.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import warnings
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from ._errors import MissingExtraError
from ._executor import Executor
from .pools._parsl import ParslPool

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterable
    from typing import Self

    from parsl.app.python import PythonApp
    from parsl.config import Config
    from parsl.dataflow.dflow import DataFlowKernel

__all__ = ["ParslPoolExecutor"]

T = TypeVar("T")


class ParslPoolExecutor(Executor):
    """Parsl's ``ParslPoolExecutor``, on aioflow's executor: every call through its function's Parsl app.

    Args:
        config: a Parsl ``Config``: the executor loads a DFK from it now, and
            cleans it up when it shuts down.
        dfk: a loaded ``DataFlowKernel`` of the caller's, left running.
        executors: the labels of the Parsl executors the apps run on (default ``"all"``).

    Raises:
        ValueError: both ``config`` and ``dfk``, or neither (Parsl's words).
        aioflow.MissingExtraError: parsl is not installed.
        aioflow.PoolError: Parsl could not start the DFK of ``config``.
    """

    _shutdown_message = "cannot schedule new futures: the executor has been shut down"

    def __init__(
        self,
        config: Config | None = None,
        dfk: DataFlowKernel | None = None,
        executors: Literal["all"] | list[str] = "all",
    ) -> None:
        if importlib.util.find_spec("parsl") is None:
            raise MissingExtraError("aioflow.parsl.ParslPoolExecutor", "parsl", "parsl")
        if config is not None and dfk is not None:
            msg = "Specify only one of config or dfk"
            raise ValueError(msg)
        if config is None and dfk is None:
            msg = "Must specify one of config or dfk"
            raise ValueError(msg)
        super().__init__("parsl", pool_options={"config": config, "dfk": dfk, "executors": executors})
        self._executors = executors
        # Each function's app (get_app), kept as Parsl's class keeps them.
        self._apps: dict[Callable[..., Any], PythonApp] = {}
        pool = self.pool
        assert isinstance(pool, ParslPool)
        try:
            self._dfk = pool.dfk  # up now, as Parsl's class loads it as it is made
        except BaseException:
            self.shutdown(wait=True)
            raise

    @property
    def app_count(self) -> int:
        """How many functions have an app here: those given to `submit` or `map` (or to `get_app`)."""
        return len(self._apps)

    def get_app(self, fn: Callable[..., Any]) -> PythonApp:
        """The Parsl app through which ``fn``'s calls go, made on first use on this executor's DFK and executors."""
        app = self._apps.get(fn)
        if app is None:
            from parsl.app.python import PythonApp

            # setdefault: of two threads making the first app of fn, both get the one kept.
            made = PythonApp(fn, data_flow_kernel=self._dfk, executors=self._executors)  # type: ignore[no-untyped-call]
            app = self._apps.setdefault(fn, made)
        return app

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Generator[T, None, None]:
        """``fn`` over the iterables' items, results in order, as Parsl's class: every call submitted now.

        One call per item, through ``fn``'s app (``chunksize`` is ignored, as
        by Parsl's class). This is the stdlib's `concurrent.futures.Executor.map`
        on `submit`: a result that times out or fails cancels the calls not
        handed to Parsl yet.
        """
        results = concurrent.futures.Executor.map(self, fn, *iterables, timeout=timeout, chunksize=chunksize)
        return cast("Generator[T, None, None]", results)  # the stdlib's map returns a generator

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """As `aioflow.Executor.shutdown`; ``cancel_futures`` warns that Parsl cannot cancel what it has been handed.

        It cancels the calls still waiting here for their dependencies; those
        handed to Parsl run to their end (a `UserWarning` says so, as Parsl's
        class warns).
        """
        if cancel_futures:
            warnings.warn(
                "Parsl cannot cancel the calls it has been handed: they run to their end; only the calls still "
                "waiting for their dependencies are cancelled",
                UserWarning,
                stacklevel=2,
            )
        super().shutdown(wait, cancel_futures=cancel_futures)

    def __enter__(self) -> Self:
        return self

    def _runnable(self, fn: Callable[..., T]) -> Callable[..., T]:
        # Every call goes through its function's app, which the parsl pool calls.
        return self.get_app(fn)
