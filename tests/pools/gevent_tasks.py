"""Task functions for the gevent pool tests. Imported in gevent-patched interpreters only."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import gevent
from gevent import monkey

if TYPE_CHECKING:
    from collections.abc import Callable

#: Names given to `announce_and_nap` calls that have started.
STARTED: list[str] = []
#: Names given to `announce_and_nap` calls that have ended, however.
ENDED: list[str] = []
#: Names given to `nap_recording_kill` calls whose greenlet was killed.
KILLED: list[str] = []
#: The most `nap_counting` calls seen running at once.
PEAK = [0]
_RUNNING = [0]


def nap(seconds: float = 0.05, value: Any = None) -> Any:
    """Yield to the hub for ``seconds``, then return ``value``."""
    gevent.sleep(seconds)
    return value


def nap_counting(seconds: float = 0.05, value: Any = None) -> Any:
    """`nap`, recording in `PEAK` how many of these run at once."""
    _RUNNING[0] += 1
    PEAK[0] = max(PEAK[0], _RUNNING[0])
    try:
        gevent.sleep(seconds)
    finally:
        _RUNNING[0] -= 1
    return value


def nap_recording_kill(seconds: float = 3600.0, name: str = "") -> None:
    """Sleep (in the hub) for ``seconds``; record ``name`` in `KILLED` if the greenlet is killed."""
    try:
        gevent.sleep(seconds)
    except gevent.GreenletExit:
        KILLED.append(name)
        raise


def announce_and_nap(seconds: float = 3600.0, name: str = "") -> None:
    """Record ``name`` in `STARTED`, print ``started <name>``, `nap_recording_kill`, record ``name`` in `ENDED`."""
    STARTED.append(name)
    try:
        sys.stdout.write(f"started {name}\n")
        sys.stdout.flush()
        nap_recording_kill(seconds, name)
    finally:
        ENDED.append(name)


#: Names given to `nap_ignoring_interrupt` calls that received a TaskInterrupted.
INTERRUPTED: list[str] = []


def nap_ignoring_interrupt(seconds: float = 3600.0, name: str = "", then: float = 2.0) -> None:
    """Sleep (in the hub); on `TaskInterrupted`, record ``name`` in `INTERRUPTED` and sleep ``then`` more seconds.

    A task that does not stop when interrupted: the thread pool gives up on it.
    """
    from aioflow import TaskInterrupted

    try:
        gevent.sleep(seconds)
    except TaskInterrupted:
        INTERRUPTED.append(name)
        gevent.sleep(then)


def os_thread() -> int:
    """The identifier of the OS thread running the task (not of its greenlet)."""
    return int(monkey.get_original("_thread", "get_ident")())


def square(x: int = 0) -> int:
    return x * x


def broken(**kwargs: Any) -> None:
    """Always fail, with a recognisable message."""
    msg = "broken on purpose"
    raise ValueError(msg)


#: Seconds a `hold_in_os_thread` thread holds its lock at most: a hang guard, never reached.
HOLD_LIMIT = 60.0


def hold_in_os_thread(lock: Any) -> Callable[[], None]:
    """Hold ``lock`` in a new OS thread until the returned function is called; return once it is held.

    As the bridge thread holds a `concurrent.futures.Future`'s condition
    while asyncio adds its done-callback or reads its state. Waiting for the
    thread blocks the hub's thread (a real lock), so the hub runs none of its
    callbacks before the lock is held. The returned function may be called
    from a hub callback: ``hub.loop.run_callback(release)`` lets go once the
    hub has run the callbacks queued before it.
    """
    allocate_lock = monkey.get_original("_thread", "allocate_lock")
    held, release = allocate_lock(), allocate_lock()
    held.acquire()
    release.acquire()

    def hold() -> None:
        with lock:
            held.release()
            release.acquire(timeout=HOLD_LIMIT)

    monkey.get_original("_thread", "start_new_thread")(hold, ())
    held.acquire()
    return release.release  # type: ignore[no-any-return]
