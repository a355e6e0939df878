"""aioflow's executors with the signatures of the stdlib's, for CPython's executor tests.

CPython's tests construct their executor as ``executor_type(max_workers,
...)`` with the stdlib's keyword arguments; these factories take the same
arguments and return an `aioflow.Executor` on the ``thread`` or ``process``
pool, which accepts those keywords itself. Their names read as classes, as
the stdlib's do: CPython's shutdown tests import them by name from
``concurrent.futures`` in a fresh interpreter (``sitecustomize`` puts them there).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aioflow

if TYPE_CHECKING:
    import multiprocessing.context
    from collections.abc import Callable, Iterable

__all__ = ["AioflowProcessPoolExecutor", "AioflowThreadPoolExecutor"]


def AioflowThreadPoolExecutor(
    max_workers: int | None = None,
    thread_name_prefix: str = "",
    initializer: Callable[..., object] | None = None,
    initargs: Iterable[Any] = (),
) -> aioflow.Executor:
    """``concurrent.futures.ThreadPoolExecutor``'s signature: an `aioflow.Executor` on the ``thread`` pool."""
    return aioflow.Executor(
        "thread",
        max_workers=max_workers,
        thread_name_prefix=thread_name_prefix,
        initializer=initializer,
        initargs=initargs,
    )


def AioflowProcessPoolExecutor(
    max_workers: int | None = None,
    mp_context: multiprocessing.context.BaseContext | None = None,
    initializer: Callable[..., object] | None = None,
    initargs: Iterable[Any] = (),
    *,
    max_tasks_per_child: int | None = None,
) -> aioflow.Executor:
    """``concurrent.futures.ProcessPoolExecutor``'s signature: an `aioflow.Executor` on the ``process`` pool."""
    return aioflow.Executor(
        "process",
        max_workers=max_workers,
        mp_context=mp_context,
        initializer=initializer,
        initargs=initargs,
        max_tasks_per_child=max_tasks_per_child,
    )
