"""Worker pools, by name. Each pool module is imported only when its pool is opened."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any

from .._errors import InitializerFailed as InitializerFailed
from .._errors import OptionError
from ._base import Pool as Pool
from ._options import DEFAULT_IDLE_TIMEOUT as DEFAULT_IDLE_TIMEOUT
from ._options import PoolOptions as PoolOptions

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "InitializerFailed",
    "Pool",
    "PoolOptions",
    "available_pools",
    "default_pool_type",
    "open_pool",
    "pool_class",
]

# pool_type -> (module, class). A module is imported on first use, so that an
# optional library is loaded only by the pool that needs it. A pool whose
# module is not part of this installation is not offered.
_REGISTRY: dict[str, tuple[str, str]] = {
    "thread": ("aioflow.pools._thread", "ThreadPool"),
    "process": ("aioflow.pools._process", "ProcessPool"),
    "ndprocess": ("aioflow.pools._ndprocess", "NonDaemonicProcessPool"),
    "multiprocessing": ("aioflow.pools._multiprocessing", "MultiprocessingPool"),
    "ndmultiprocessing": ("aioflow.pools._multiprocessing", "NonDaemonicMultiprocessingPool"),
    "billiard": ("aioflow.pools._billiard", "BilliardPool"),
    "gevent": ("aioflow.pools._gevent", "GeventPool"),
    # Beyond one machine: existing clusters, driven by aioflow's scheduler.
    "dask": ("aioflow.pools._dask", "DaskPool"),
    "parsl": ("aioflow.pools._parsl", "ParslPool"),
    "mpi": ("aioflow.pools._mpi", "MPIPool"),
}
_CLASSES: dict[str, type[Pool]] = {}


def _registered() -> dict[str, tuple[str, str]]:
    return {name: entry for name, entry in _REGISTRY.items() if importlib.util.find_spec(entry[0]) is not None}


def available_pools() -> tuple[str, ...]:
    """The ``pool_type`` names this installation can open (optional libraries aside)."""
    return tuple(_registered())


def default_pool_type() -> str:
    """The pool used when ``pool_type`` is not given.

    ``gevent`` in a process gevent has monkey-patched (process pools can hang
    there), ``process`` otherwise.
    """
    from .._gevent_bridge import is_patched

    if is_patched() and "gevent" in _registered():
        return "gevent"
    return "process"


def pool_class(pool_type: str) -> type[Pool]:
    """The `Pool` subclass registered under ``pool_type``.

    Raises:
        OptionError: no pool of that name.
    """
    known = _CLASSES.get(pool_type)
    if known is not None:
        return known
    registered = _registered()
    if pool_type not in registered:
        import difflib

        names = ", ".join(map(repr, registered))
        close = difflib.get_close_matches(str(pool_type), list(registered), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise OptionError("pool_type", f"one of {names}{hint}", pool_type)
    module_name, class_name = _REGISTRY[pool_type]
    module = sys.modules.get(module_name) or importlib.import_module(module_name)
    cls: type[Pool] = getattr(module, class_name)
    _CLASSES[pool_type] = cls
    return cls


def open_pool(
    pool_type: str | None = None,
    *,
    max_workers: int | None = None,
    scaling_workers: bool = True,
    context: str | None = None,
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
    pool_options: dict[str, Any] | None = None,
) -> Pool:
    """Open a pool that several executions can share.

    Use it as a context manager, ``with`` or ``async with``; workers start on
    first use and stop when the block ends. Pass it to ``execute_graph(...,
    pool=pool)`` to reuse warm workers across executions. With
    ``scaling_workers``, a worker idle for ``idle_timeout`` seconds is retired
    (``None``: never), so a long-lived pool gives memory back between bursts.

    Raises:
        OptionError: an unknown pool type or an invalid option (before any
            worker starts).
    """
    options = PoolOptions(
        max_workers=max_workers,
        scaling_workers=scaling_workers,
        context=context,
        idle_timeout=idle_timeout,
        extra=dict(pool_options or {}),
    )
    return pool_class(pool_type or default_pool_type())(options)
