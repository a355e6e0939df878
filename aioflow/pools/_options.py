"""The options every pool shares, and their bounds.

`PoolOptions` is what a pool is opened with (`Pool.options`): validated when
it is made, so that a wrong value is refused before any worker starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from .._errors import OptionError

__all__ = ["DEFAULT_IDLE_TIMEOUT", "MAX_WORKERS", "PoolOptions"]

#: Seconds a scaling pool keeps an idle worker before retiring it. A process
#: worker costs tens of megabytes while idle and tens to hundreds of
#: milliseconds to start again: after a minute without work, the memory is
#: worth more than the restart it would save.
DEFAULT_IDLE_TIMEOUT = 60.0

#: The most workers a pool may be asked for: 1,024, or one per CPU on a larger
#: machine. A count beyond it is a slip (9999 for 99) that would start that
#: many processes: no local pool runs more usefully (a process worker holds
#: file descriptors of the parent, whose default limit on Linux is 1,024), and
#: on a cluster pool max_workers only sizes the calls kept in flight.
MAX_WORKERS = max(1024, os.cpu_count() or 1)


@dataclass(frozen=True)
class PoolOptions:
    """Options shared by every pool type. Validated at construction.

    Attributes:
        max_workers: the most workers the pool runs at once (``None``: the pool's default).
        scaling_workers: start workers only when tasks need them, and reuse idle
            ones first (``True``), or start ``max_workers`` at once (``False``).
        context: the multiprocessing start method of process-based pools
            (``spawn``, ``fork``, ``forkserver``; ``None``: the platform default).
        idle_timeout: with ``scaling_workers``, seconds after which a worker
            with nothing to do is retired (``None``: never).
        extra: pool-specific keyword arguments (``pool_options=``).
    """

    max_workers: int | None = None
    scaling_workers: bool = True
    context: str | None = None
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        mw = self.max_workers
        if mw is not None and (isinstance(mw, bool) or not isinstance(mw, int) or mw < 1):
            raise OptionError(
                "max_workers",
                "an int >= 1 or None",
                mw,
                f"max_workers must be greater than 0: an int >= 1, or None (got {mw!r} of type {type(mw).__name__})",
            )
        if mw is not None and mw > MAX_WORKERS:
            raise OptionError("max_workers", f"an int from 1 to {MAX_WORKERS} (docs/pools.md), or None", mw)
        if not isinstance(self.scaling_workers, bool):
            raise OptionError("scaling_workers", "True or False", self.scaling_workers)
        if self.context is not None:
            import multiprocessing

            methods = multiprocessing.get_all_start_methods()
            if self.context not in methods:
                raise OptionError("context", f"one of {', '.join(map(repr, methods))} or None", self.context)
        it = self.idle_timeout
        if it is not None and (isinstance(it, bool) or not isinstance(it, (int, float)) or not it > 0):
            raise OptionError("idle_timeout", "a number of seconds > 0, or None (never retire idle workers)", it)
        if not isinstance(self.extra, dict):
            raise OptionError("pool_options", "a dict", self.extra)
