"""How every process pool starts its ``spawn`` and ``forkserver`` workers, overriding CPython's ``multiprocessing`` start.

Every process pool starts its ``spawn`` and ``forkserver`` workers as
`SpawnProcess` and `ForkServerProcess` (the contexts of `start_context`): a
worker that dies before it has read its start-up data is a worker that died
(its sentinel and exit status say so), where the stdlib's start would wait
forever (``spawn``, when the data outgrow a pipe's buffer) or raise
``BrokenPipeError`` in whichever thread started it (``forkserver``). On a
Python this module was not written for, those classes start as the stdlib's
do: the ``process``, ``ndprocess`` and ``billiard`` pools open on any version.

`NonDaemonic` is the mixin of the worker processes that are never daemonic
(``ndprocess``, ``ndmultiprocessing``), whatever the pool assigns, so that
their tasks may start processes and pools; `non_daemonic_context` gives
their multiprocessing context per start method.

This module is apart from `aioflow.pools._mp_internals` (the overrides of
``multiprocessing.Pool`` the ``multiprocessing`` pools need) so that a
``process`` pool, and each worker it spawns, imports only this: ``fork``
needs nothing here, and a spawned worker unpickles its process object from
this module.

What is overridden or read: ``SpawnProcess._Popen`` and
``ForkServerProcess._Popen`` (replaced); ``popen_spawn_posix.Popen._launch``
(replaced: the stdlib's steps, with ``spawn.get_preparation_data``,
``get_command_line``, ``get_executable``, ``util.spawnv_passfds``,
``resource_tracker.getfd``, ``context.set_spawning_popen`` and the ``_fds``
the child keeps, in the stdlib's order but for when the read end of the
child's data pipe is closed) and ``popen_forkserver.Popen._launch``
(wrapped: the ``sentinel`` it sets before it writes the child its data, the
``pid`` it reads after, with ``forkserver.read_signed``).

Versions. Written and tested for CPython 3.11 (3.11.7); ``context.py``,
``popen_spawn_posix.py``, ``popen_forkserver.py`` and ``spawn.py`` in CPython
3.12 (3.12.1) and 3.13 (3.13.0) were compared with 3.11's line by line: what
is listed above is unchanged there. Elsewhere the stdlib's start is used.
`SUPPORTED` and `check_supported` are also those of
`aioflow.pools._mp_internals`, whose overrides were checked against the same
versions.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import multiprocessing.popen_forkserver
import multiprocessing.popen_spawn_posix
import multiprocessing.util
import os
import sys
from multiprocessing import reduction, resource_tracker, spawn
from typing import Any

from .._errors import PoolError

__all__ = [
    "SUPPORTED",
    "ForkServerProcess",
    "NonDaemonic",
    "SpawnProcess",
    "check_supported",
    "non_daemonic_context",
    "start_context",
]

#: The CPython versions (major, minor) whose multiprocessing internals this module and `aioflow.pools._mp_internals` were written for.
SUPPORTED = ((3, 11), (3, 12), (3, 13))


def _running_version() -> tuple[str, tuple[int, ...]]:
    """The Python implementation (``sys.implementation.name``) and version running (the check's one source)."""
    return sys.implementation.name, tuple(sys.version_info[:3])


def _known_version() -> bool:
    """Whether this is CPython, in a version of `SUPPORTED`."""
    implementation, version = _running_version()
    return implementation == "cpython" and version[:2] in SUPPORTED


def check_supported(pool_name: str) -> None:
    """Refuse to open the ``pool_name`` pool on a Python whose multiprocessing internals this module does not know.

    Raises:
        PoolError: not CPython, or a CPython version outside `SUPPORTED`.
    """
    if _known_version():
        return
    implementation, version = _running_version()
    found = f"{implementation} {'.'.join(map(str, version))}"
    supported = ", ".join(f"{major}.{minor}" for major, minor in SUPPORTED)
    msg = (
        f"the {pool_name!r} pool overrides internals of the multiprocessing module of CPython {supported}, "
        f"and this is {found}: use pool_type 'process' or 'ndprocess' (which override none there), "
        "or an aioflow release written for this Python"
    )
    raise PoolError(msg)


def _start_data(popen: Any, process_obj: Any) -> memoryview:
    """What a new ``spawn`` child reads first, as the stdlib writes it: the preparation data, then the process object."""
    buffer = io.BytesIO()
    multiprocessing.context.set_spawning_popen(popen)
    try:
        reduction.dump(spawn.get_preparation_data(process_obj._name), buffer)
        reduction.dump(process_obj, buffer)
    finally:
        multiprocessing.context.set_spawning_popen(None)
    return buffer.getbuffer()


def _close_fds(*fds: int) -> None:
    for fd in fds:
        os.close(fd)


def _hand_over(fd: int, data: memoryview) -> None:
    """Write a new child its start-up data, unless it is gone before it has read them all."""
    with contextlib.suppress(BrokenPipeError), open(fd, "wb", closefd=False) as pipe:
        pipe.write(data)


class _SpawnPopen(multiprocessing.popen_spawn_posix.Popen):
    """``spawn``'s start, which outlives a child that dies before it has read its start-up data.

    The stdlib's ``_launch`` holds a copy of the read end of the child's data
    pipe until it has written everything: when the data outgrow the pipe's
    buffer (large ``initargs``) and the child is gone, the write waits
    forever. Here that copy is closed as soon as the child has its own, so the
    write fails instead (the pipe has no reader left), and the child counts as
    started: its sentinel and exit status say it died, as for any worker that
    dies.
    """

    def _launch(self, process_obj: Any) -> None:
        fds: list[Any] = self._fds  # type: ignore[attr-defined]  # the descriptors the child keeps
        tracker_fd = resource_tracker.getfd()
        fds.append(tracker_fd)
        data = _start_data(self, process_obj)
        parent_r, child_w = os.pipe()
        child_r, parent_w = os.pipe()
        self.finalizer = multiprocessing.util.Finalize(self, _close_fds, (parent_r, parent_w))
        try:
            command = spawn.get_command_line(tracker_fd=tracker_fd, pipe_handle=child_r)
            fds.extend([child_r, child_w])
            executable: Any = spawn.get_executable()
            self.pid = multiprocessing.util.spawnv_passfds(executable, command, fds)
        finally:
            os.close(child_r)
            os.close(child_w)
        self.sentinel = parent_r
        _hand_over(parent_w, data)


class _ForkServerPopen(multiprocessing.popen_forkserver.Popen):
    """``forkserver``'s start, which outlives a child that dies before it has read its start-up data.

    The stdlib's ``_launch`` then raises ``BrokenPipeError`` before it reads
    the child's pid. The fork server has sent it all the same, right after the
    fork, and sends the child's exit status once it has reaped it: read the
    pid, and the child counts as started, its sentinel and exit status saying
    it died. (Without a sentinel the fork server was not reached: no child.)
    """

    def _launch(self, process_obj: Any) -> None:
        try:
            super()._launch(process_obj)  # type: ignore[misc]
        except BrokenPipeError:
            if getattr(self, "sentinel", None) is None:
                raise
            self.pid = multiprocessing.forkserver.read_signed(self.sentinel)


#: Per start method that writes its children start-up data: the start above, and the stdlib's.
_POPENS: dict[str, tuple[Any, Any]] = {
    "spawn": (_SpawnPopen, multiprocessing.popen_spawn_posix.Popen),
    "forkserver": (_ForkServerPopen, multiprocessing.popen_forkserver.Popen),
}


def _popen(process_obj: Any) -> Any:
    """Start ``process_obj``: with the start above on a Python this module knows, else with the stdlib's."""
    ours, stdlib = _POPENS[process_obj._start_method]
    return (ours if _known_version() else stdlib)(process_obj)


class SpawnProcess(multiprocessing.context.SpawnProcess):
    """A ``spawn`` process whose child may die before it has read its start-up data (`_SpawnPopen`)."""

    _Popen = staticmethod(_popen)


class ForkServerProcess(multiprocessing.context.ForkServerProcess):
    """A ``forkserver`` process whose child may die before it has read its start-up data (`_ForkServerPopen`)."""

    _Popen = staticmethod(_popen)


class _SpawnContext(multiprocessing.context.SpawnContext):
    Process = SpawnProcess


class _ForkServerContext(multiprocessing.context.ForkServerContext):
    Process = ForkServerProcess


_CONTEXTS: dict[str, multiprocessing.context.BaseContext] = {
    "spawn": _SpawnContext(),
    "forkserver": _ForkServerContext(),
}


def start_context(method: str | None) -> Any:
    """The multiprocessing context of start method ``method`` (``None``: the default), its processes started as above.

    Raises:
        ValueError: the start method is not available here.
    """
    name = method or multiprocessing.get_start_method()
    return _CONTEXTS.get(name) or multiprocessing.get_context(name)


# --------------------------------------------------------------------------- non-daemonic workers


class NonDaemonic:
    """Mixin for a ``multiprocessing`` process class: the process is never daemonic.

    A daemonic process may not start processes of its own
    (``daemonic processes are not allowed to have children``). `multiprocessing.Pool` sets ``daemon = True`` on
    every worker; here the assignment is ignored, and ``_config``, which the
    child inherits and which ``Process.start`` checks there, keeps
    ``daemon=False``.
    """

    _config: dict[str, Any]

    @property
    def daemon(self) -> bool:
        """Always ``False``."""
        return False

    @daemon.setter
    def daemon(self, daemonic: bool) -> None:
        self._config["daemon"] = False


# Module-level classes, one per start method: spawn and forkserver pickle the
# process object by its class's qualified name.
class NonDaemonicForkProcess(NonDaemonic, multiprocessing.context.ForkProcess):
    """A forked process that is never daemonic."""


class NonDaemonicSpawnProcess(NonDaemonic, SpawnProcess):
    """A spawned process that is never daemonic."""


class NonDaemonicForkServerProcess(NonDaemonic, ForkServerProcess):
    """A process started by the fork server that is never daemonic."""


class _NonDaemonicForkContext(multiprocessing.context.ForkContext):
    Process = NonDaemonicForkProcess


class _NonDaemonicSpawnContext(multiprocessing.context.SpawnContext):
    Process = NonDaemonicSpawnProcess


class _NonDaemonicForkServerContext(multiprocessing.context.ForkServerContext):
    Process = NonDaemonicForkServerProcess


_NON_DAEMONIC_CONTEXTS: dict[str, multiprocessing.context.BaseContext] = {
    "fork": _NonDaemonicForkContext(),
    "spawn": _NonDaemonicSpawnContext(),
    "forkserver": _NonDaemonicForkServerContext(),
}


def non_daemonic_context(method: str | None = None) -> Any:
    """The multiprocessing context of start method ``method`` whose processes (its ``Process``) are never daemonic.

    Args:
        method: ``spawn``, ``fork`` or ``forkserver``; ``None``: the platform default.

    Raises:
        ValueError: the start method is not available here.
    """
    name = method or multiprocessing.get_start_method()
    try:
        return _NON_DAEMONIC_CONTEXTS[name]
    except KeyError:
        msg = f"cannot find context for {name!r}"
        raise ValueError(msg) from None
