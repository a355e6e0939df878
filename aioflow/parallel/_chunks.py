"""What travels to a worker: the function (by reference, or by value with cloudpickle), chunks of items, outcomes.

A map sends the function once per call, wrapped in `PicklableAndCallable`,
which pickles it by reference when the worker can import it, and by value
(cloudpickle) when it lives in ``__main__``, a notebook, or a closure. Items
travel in chunks (`chunks`); a worker runs a whole chunk with `run_chunk` and
answers with one `Outcome`: every result, or the first exception with the
worker's traceback text and the item's position. `raise_outcome` turns the
latter back into the task's exception, the worker's traceback as ``__cause__``.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import multiprocessing
import pickle
import threading
import traceback
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .._errors import UnsendableFunctionError
from ._options import check_count

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

__all__ = [
    "UNSIZED_CHUNKSIZE",
    "Outcome",
    "PicklableAndCallable",
    "chunks",
    "get_default_chunksize",
    "in_worker",
    "raise_outcome",
    "run_chunk",
    "worker_rank",
]

R = TypeVar("R")

#: Chunk size for an input without ``len()`` (a generator) when ``chunksize``
#: is not given. A chunk costs a round trip of a few tens of microseconds; 16
#: tiny items share it (a few microseconds each), while for slow tasks the
#: last chunks leave at most 16 tasks' time of imbalance between workers.
#: Pass ``chunksize=`` for a long generator of tiny items.
UNSIZED_CHUNKSIZE = 16

#: Chunks per worker `get_default_chunksize` aims at: enough that a worker
#: that finishes early takes another chunk (load balance), few enough that the
#: per-chunk cost stays negligible. The value scinexus uses.
_CHUNKS_PER_WORKER = 4

# Set while a worker (a process of a backend, or a thread of the thread
# backend) runs a chunk: a map started from inside a task is a nested one.
_worker_state = threading.local()

# Numbers of the master's threads that run chunks (worker_rank), across every map and backend.
_THREAD_RANKS = itertools.count(1)
_RANK_LOCK = threading.Lock()

# Functions received by value in this worker, by payload (the latest few):
# a map sends its function with every chunk on executor backends.
_LOADED: OrderedDict[bytes, Callable[..., Any]] = OrderedDict()
_LOADED_MAX = 8
_LOADED_LOCK = threading.Lock()


def get_default_chunksize(s: Iterable[Any], max_workers: int) -> int:
    """The chunk size a map of processes uses when ``chunksize`` is not given.

    ``ceil(len(s) / (4 * max_workers))``, at least 1 (an empty input too):
    each worker gets about four chunks. Stable: the same length and
    ``max_workers`` always give the same chunks. An input without ``len()``
    (a generator) gets `UNSIZED_CHUNKSIZE` (16).

    Args:
        s: the input of the map.
        max_workers: the number of workers, an int >= 1 (numpy's integers too).

    Raises:
        ParallelOptionTypeError: ``max_workers`` is not an int (``None`` included).
        ParallelOptionError: ``max_workers`` is below 1.
    """
    workers = check_count(max_workers, "max_workers")
    try:
        size = len(s)  # type: ignore[arg-type]
    except TypeError:
        return UNSIZED_CHUNKSIZE
    return max(1, math.ceil(size / (_CHUNKS_PER_WORKER * workers)))


def chunks(items: Iterator[Any], chunksize: int) -> Iterator[list[Any]]:
    """Cut ``items`` into lists of ``chunksize`` (the last may be shorter), pulling items only as chunks are taken."""
    if chunksize == 1:
        for item in items:
            yield [item]
        return
    while True:
        chunk = list(itertools.islice(items, chunksize))
        if not chunk:
            return
        yield chunk


def in_worker() -> bool:
    """Whether this thread is running a chunk for a parallel map (a map started here would be nested)."""
    return bool(getattr(_worker_state, "active", False))


def worker_rank() -> int:
    """This worker's number, 1 or more, in a worker of a map; 0 in the master.

    A thread of the master process that has run a chunk (a thread backend's
    worker) has a number of its own, handed out once and never reused in this
    process, so no two live threads share one. Otherwise the number is the
    process's: the one multiprocessing puts at the end of a process's name
    (``ForkProcess-3``, ``LokyProcess-2``, ``aioflow-parallel-worker-5``), as
    scinexus reads it; 1 for a child process whose name has none; 0 for the
    main process.
    """
    rank: int = getattr(_worker_state, "rank", 0)
    if rank:
        return rank
    process = multiprocessing.current_process()
    if process.name == "MainProcess":
        return 0
    number = process.name.rpartition("-")[2]
    return int(number) if number.isdigit() else 1


def _claim_thread_rank() -> int:
    """The rank of a thread about to run its first chunk: a new number for a thread of the master, else 0."""
    if multiprocessing.parent_process() is not None or threading.current_thread() is threading.main_thread():
        return 0  # a worker process, or the master's own thread (a backend running chunks in the caller)
    with _RANK_LOCK:
        return next(_THREAD_RANKS)


def _describe(fn: object) -> str:
    module = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if name is None:
        return repr(fn)
    return f"{module}.{name}" if module else str(name)


class PicklableAndCallable(Generic[R]):
    """A function that can be sent to a worker process, and called.

    It pickles by reference (module and name) when the worker can import
    the function, and by value with cloudpickle when it cannot: functions
    defined in ``__main__`` (a script, ``python -c``, a notebook), lambdas
    and closures. Either way the pickled form is computed once.

    Args:
        func: the function.
    """

    __slots__ = ("_payload", "func")

    def __init__(self, func: Callable[..., R]) -> None:
        self.func = func
        self._payload: bytes | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        return self.func(*args, **kwargs)

    @property
    def name(self) -> str:
        """The function's name as messages show it: ``module.qualname``."""
        return _describe(self.func)

    def payload(self) -> bytes:
        """The pickled function: by reference when importable, else by value.

        Raises:
            UnsendableFunctionError: the function cannot be pickled at all.
        """
        if self._payload is None:
            self._payload = _dumps_function(self.func)
        return self._payload

    def __reduce__(self) -> tuple[Any, ...]:
        return _load_function, (self.payload(),)

    def __repr__(self) -> str:
        return f"PicklableAndCallable({self.name})"


def _dumps_function(func: Callable[..., Any]) -> bytes:
    if getattr(func, "__module__", None) != "__main__":
        with contextlib.suppress(Exception):  # not importable by name (a lambda, a closure, ...): by value below
            return pickle.dumps(func, protocol=pickle.HIGHEST_PROTOCOL)
    # By value: a worker may not have this function in its __main__ (a
    # notebook, python -c, or a function defined after the worker started).
    import cloudpickle

    try:
        return bytes(cloudpickle.dumps(func, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception as exc:
        raise UnsendableFunctionError(_describe(func), f"{type(exc).__name__}: {exc}") from exc


def _load_function(payload: bytes) -> PicklableAndCallable[Any]:
    with _LOADED_LOCK:
        func = _LOADED.get(payload)
        if func is not None:
            _LOADED.move_to_end(payload)
    if func is None:
        func = pickle.loads(payload)
        with _LOADED_LOCK:
            _LOADED[payload] = func
            while len(_LOADED) > _LOADED_MAX:
                _LOADED.popitem(last=False)
    wrapped = PicklableAndCallable(func)
    wrapped._payload = payload
    return wrapped


# An outcome: (True, results) or (False, position in the chunk, exception, traceback text).
Outcome = tuple[Any, ...]


def run_chunk(fn: Callable[[Any], Any], items: list[Any]) -> Outcome:
    """Call ``fn`` on each item, in order, until one raises. Runs in the worker."""
    func = fn.func if isinstance(fn, PicklableAndCallable) else fn  # one call level less per item
    if not hasattr(_worker_state, "rank"):
        _worker_state.rank = _claim_thread_rank()
    _worker_state.active = True
    results: list[Any] = []
    append = results.append
    try:
        for item in items:
            append(func(item))
    except Exception as exc:
        text = "".join(traceback.format_exception(exc))
        return (False, len(results), _picklable(exc), text)
    finally:
        _worker_state.active = False
    return (True, results)


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception as err:
        return RuntimeError(f"{type(exc).__name__}: {exc} (the exception itself cannot be pickled: {err})")
    return exc


def raise_outcome(outcome: Outcome, fn: PicklableAndCallable[Any], first_index: int, remote: bool) -> list[Any]:
    """The results of a chunk, or raise the exception of the item that failed.

    ``first_index`` is the input position of the chunk's first item. With
    ``remote``, the worker's traceback becomes the exception's ``__cause__``.
    """
    if outcome[0]:
        results: list[Any] = outcome[1]
        return results
    _, position, exc, text = outcome
    exc.add_note(f"raised by {fn.name} on item {first_index + position} of the input (aioflow.parallel)")
    if remote and exc.__cause__ is None:
        from ..pools._outcomes import RemoteTraceback

        raise exc from RemoteTraceback(text)
    raise exc
