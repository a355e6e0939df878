"""scinexus's documented API: the `Parallel` base class, backend objects with its methods, ranks, counts, messages.

scinexus's own tests run against aioflow.parallel in
tests/compat/test_scinexus_parallel.py; these pin the same behaviours in
aioflow's terms, with the reasons.
"""

from __future__ import annotations

import os
import pickle
import sys
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any
from unittest.mock import patch

import numpy
import psutil
import pytest

import aioflow
import aioflow.parallel as par

from .par_tasks import inc, square

LOCAL_BACKENDS = ["multiprocess", "loky", "threads"]


def rank_and_master(_: object) -> tuple[int, bool]:
    return par.get_rank(), par.is_master_process()


def pid_and_rank(_: object) -> tuple[int, int]:
    return os.getpid(), par.get_rank()


class Recorder(par.Parallel):
    """Another engine: runs maps in the caller, and records how the module called it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int | None, dict[str, Any]]] = []

    def imap(self, f: Any, s: Iterable[Any], max_workers: int | None = None, **kwargs: Any) -> Iterator[Any]:
        self.calls.append(("imap", max_workers, kwargs))
        return (f(x) for x in s)

    def as_completed(self, f: Any, s: Iterable[Any], max_workers: int | None = None, **kwargs: Any) -> Iterator[Any]:
        self.calls.append(("as_completed", max_workers, kwargs))
        results: list[Any] = [f(x) for x in s]
        return iter(results[::-1])

    def is_master_process(self) -> bool:
        return True

    def get_rank(self) -> int:
        return 0

    def get_size(self) -> int:
        return 1


# ----------------------------------------------------------------------------- Parallel


def test_parallel_is_abstract() -> None:
    """Parallel cannot be instantiated, nor can a subclass missing one of its five methods."""
    with pytest.raises(TypeError):
        par.Parallel()  # type: ignore[abstract]

    class OnlyImap(par.Parallel):
        def imap(self, f: Any, s: Iterable[Any], max_workers: int | None = None, **kwargs: Any) -> Iterator[Any]:
            return iter(())

    with pytest.raises(TypeError):
        OnlyImap()  # type: ignore[abstract]


def test_another_engine_gets_the_maps() -> None:
    """A Parallel of another engine, set as the default, gets the module's maps as scinexus calls them."""
    engine = Recorder()
    par.set_parallel_backend(engine)
    assert par.get_parallel_backend() is engine
    assert par.map(inc, range(3), max_workers=2) == [1, 2, 3]
    assert isinstance(par.imap(inc, range(3)), Generator)
    assert list(par.as_completed(inc, range(3), chunksize=5)) == [3, 2, 1]
    assert engine.calls == [("imap", 2, {"chunksize": None}), ("as_completed", None, {"chunksize": 5})]


def test_aioflow_backends_are_parallel_engines() -> None:
    """Every backend class is a Parallel; BACKEND_TYPES maps scinexus's names to them."""
    assert set(par.BACKEND_TYPES) == {"multiprocess", "threads", "loky", "mpi"}
    for name, cls in par.BACKEND_TYPES.items():
        assert issubclass(cls, par.Parallel), name
        if name != "mpi":
            assert isinstance(par.get_parallel_backend(name), cls), name


# ----------------------------------------------------------------------------- backend objects


@pytest.mark.parametrize("name", LOCAL_BACKENDS)
def test_backend_objects_map(name: str) -> None:
    """A backend object's imap and as_completed map in order and in completion order, without being the default."""
    backend = par.BACKEND_TYPES[name]()
    try:
        assert list(backend.imap(square, range(10), max_workers=2)) == [x * x for x in range(10)]
        assert sorted(backend.as_completed(square, range(10), chunksize=1)) == [x * x for x in range(10)]
        assert list(backend.imap(square, [])) == []
        assert isinstance(par.get_parallel_backend(), par.MultiprocessBackend)
    finally:
        backend.shutdown()


@pytest.mark.parametrize("name", LOCAL_BACKENDS)
def test_backend_objects_rank_size_master(name: str) -> None:
    """In the master: rank 0, the master, and as many workers by default as CPUs; in a worker: rank 1 or more."""
    backend = par.BACKEND_TYPES[name]()
    try:
        assert backend.get_rank() == 0
        assert backend.is_master_process()
        assert backend.get_size() == len(os.sched_getaffinity(0))
        for rank, master in backend.imap(rank_and_master, range(4), max_workers=2, chunksize=1):
            assert rank >= 1
            assert not master
    finally:
        backend.shutdown()


def test_backend_objects_refuse_unknown_keywords() -> None:
    """imap takes chunksize and if_serial besides scinexus's arguments; a misspelt keyword is a TypeError."""
    with pytest.raises(TypeError, match="chunk_size"):
        par.get_parallel_backend("multiprocess").imap(inc, range(3), chunk_size=2)


def test_mpi_backend_outside_mpi_is_a_runtime_error() -> None:
    """use_mpi=True in a process no MPI launcher started: MPIUnavailableError, a PoolError and a RuntimeError."""
    with pytest.raises(RuntimeError, match="Cannot use MPI") as info:
        par.imap(inc, [1], use_mpi=True)
    assert isinstance(info.value, aioflow.PoolError)
    assert isinstance(info.value, par.MPIUnavailableError)
    assert par.MPIBackend().get_size() == 1


# ----------------------------------------------------------------------------- ranks


def test_process_workers_have_ranks_from_one() -> None:
    """Workers of the default backend have distinct ranks of 1 or more; the master keeps rank 0."""
    rank_of = dict(par.map(pid_and_rank, range(8), max_workers=2, chunksize=1))
    assert all(rank >= 1 for rank in rank_of.values())
    assert len(set(rank_of.values())) == len(rank_of)
    assert (par.get_rank(), par.is_master_process()) == (0, True)


def test_thread_workers_have_distinct_ranks_and_are_not_master() -> None:
    """Two threads of the thread backend, held together by a barrier, report two distinct ranks above 0."""
    barrier = threading.Barrier(2, timeout=30)

    def blocked(_: object) -> tuple[int, bool]:
        barrier.wait()
        return par.get_rank(), par.is_master_process()

    got = list(par.ThreadBackend().imap(blocked, [1, 2], max_workers=2))
    assert len({rank for rank, _ in got}) == 2
    assert all(rank >= 1 and not master for rank, master in got)


def test_a_thread_of_the_callers_own_is_the_master() -> None:
    """A thread the caller started (a web handler, a GUI worker) is rank 0 and the master."""
    got: list[tuple[int, bool]] = []
    thread = threading.Thread(target=lambda: got.append((par.get_rank(), par.is_master_process())))
    thread.start()
    thread.join()
    assert got == [(0, True)]


def test_a_process_rank_is_the_number_in_its_name() -> None:
    """A child process's rank is the number multiprocessing ends its name with, as scinexus reads it."""
    fake = type("FakeProcess", (), {"name": "LokyProcess-3"})()
    with patch("multiprocessing.current_process", return_value=fake):
        assert par.get_rank() == 3
        assert not par.is_master_process()


# ----------------------------------------------------------------------------- counts and messages


@pytest.mark.parametrize("count", [numpy.int64(2), numpy.int32(2), numpy.uint8(2)])
def test_numpy_integers_are_counts(count: Any) -> None:
    """numpy integers are accepted wherever a count is taken, and become ints."""
    assert par.map(inc, range(6), max_workers=count, chunksize=count) == list(range(1, 7))
    chunksize = par.get_default_chunksize(range(16), count)
    assert (chunksize, type(chunksize)) == (2, int)


@pytest.mark.parametrize("value", [True, False, numpy.True_, 2.5, "2"])
@pytest.mark.parametrize("option", ["max_workers", "chunksize"])
def test_what_is_not_an_integer_is_a_type_error(option: str, value: Any) -> None:
    """A bool, a float or a string is refused as a type: OptionError and TypeError, in scinexus's words."""
    with pytest.raises(TypeError, match=f"{option} must be an int or None, got") as info:
        par.imap(inc, range(4), **{option: value})
    assert isinstance(info.value, aioflow.OptionError)
    assert vars(info.value)["option"] == option


@pytest.mark.parametrize("value", [0, -1])
@pytest.mark.parametrize("option", ["max_workers", "chunksize"])
def test_a_count_below_one_is_named(option: str, value: int) -> None:
    """A count below 1: OptionError (a ValueError) saying 'max_workers (-1) must be greater than 0', as scinexus."""
    methods: list[Callable[..., object]] = [par.imap, par.as_completed, par.get_parallel_backend("threads").imap]
    for method in methods:
        with pytest.raises(aioflow.OptionError, match=rf"{option} \({value}\) must be greater than 0"):
            method(inc, range(4), **{option: value})


@pytest.mark.parametrize("value", [None, True, 2.5, 0])
def test_get_default_chunksize_takes_a_worker_count(value: Any) -> None:
    """get_default_chunksize needs an int >= 1: None, a bool or a float is a TypeError, 0 a ValueError."""
    with pytest.raises((TypeError, ValueError), match=r"max_workers (must be an int, got|\(0\))"):
        par.get_default_chunksize(range(16), value)
    assert par.get_default_chunksize([], 6) == 1


def test_scinexus_messages_for_names_and_choices() -> None:
    """An unknown backend and an invalid if_serial are ValueErrors in scinexus's words."""
    with pytest.raises(ValueError, match="unknown backend 'invalid'"):
        par.set_parallel_backend("invalid")
    with pytest.raises(ValueError, match="invalid choice 'sometimes' for if_serial"):
        par.imap(inc, [1], if_serial="sometimes")


def test_a_missing_library_is_an_import_error_every_time() -> None:
    """'loky' hidden after its backend was made: choosing it again raises ImportError, as scinexus."""
    par.get_parallel_backend("loky")
    with patch.dict("sys.modules", {"loky": None}), pytest.raises(ImportError, match=r"aioflow\[loky\]"):
        par.set_parallel_backend("loky")


def test_errors_pickle_round_trip() -> None:
    """The new errors survive pickling with their type, message and fields."""
    makers: list[Callable[[], object]] = [
        lambda: par.imap(inc, [1], max_workers=True),
        lambda: par.imap(inc, [1], chunksize=0),
        lambda: par.imap(inc, [1], use_mpi=True),
    ]
    for make in makers:
        with pytest.raises(aioflow.AioflowError) as info:
            make()
        copy = pickle.loads(pickle.dumps(info.value))
        assert type(copy) is type(info.value)
        assert str(copy) == str(info.value)


# ----------------------------------------------------------------------------- default backend


def test_the_default_follows_the_gil(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the GIL (a free-threaded build), the master's default is the thread backend; with it, processes."""
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: False, raising=False)
    assert isinstance(par.get_parallel_backend(), par.ThreadBackend)
    assert par.map(lambda _: psutil.Process().pid, range(4), max_workers=2) == [os.getpid()] * 4
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: True, raising=False)
    assert isinstance(par.get_parallel_backend(), par.MultiprocessBackend)
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: False, raising=False)
    par.set_parallel_backend("loky")
    assert isinstance(par.get_parallel_backend(), par.LokyBackend)  # a choice is never replaced
