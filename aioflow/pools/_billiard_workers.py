"""The billiard pool's workers started by ``spawn`` and ``forkserver``: standard library processes that run billiard's loop.

Imported only for those start methods (`_billiard_internals.start_method`):
a pool that forks its workers never needs the standard library's fork
server and spawn machinery.

Imports: `_mp_start`.
"""

from __future__ import annotations

from typing import Any

from ._mp_start import ForkServerProcess, SpawnProcess

__all__ = ["STDLIB_WORKERS"]


class _StdlibWorker:
    """Mixin for a pool worker that is a standard library process: billiard's pool asks its workers ``_is_alive``."""

    def _is_alive(self) -> bool:
        return bool(self.is_alive())  # type: ignore[attr-defined]


class _ForkServerWorker(_StdlibWorker, ForkServerProcess):
    """A pool worker started by the standard library's fork server, which reports how each worker ended.

    billiard's own fork server sends a worker's exit code only when the
    worker returns from its main function; billiard's workers end with
    ``os._exit`` (or a signal), so it reports 255 for every one. The worker
    runs billiard's loop all the same. A worker that dies before it has read
    its start-up data is a dead worker (`aioflow.pools._mp_internals`).
    """


class _SpawnWorker(_StdlibWorker, SpawnProcess):
    """A pool worker started by the standard library's ``spawn``, which outlives a worker that dies as it starts.

    billiard's own ``spawn`` holds the read end of the new worker's data pipe
    while it writes the worker its start-up data: a worker that dies before it
    has read more than the pipe's buffer (large ``initargs``) leaves that
    write, and the thread that started the worker, waiting forever. The
    standard library's start as `aioflow.pools._mp_internals` runs it counts
    such a worker as dead. The worker runs billiard's loop all the same.
    """


#: The start methods whose workers are standard library processes, and their class.
STDLIB_WORKERS: dict[str, Any] = {"spawn": _SpawnWorker, "forkserver": _ForkServerWorker}
