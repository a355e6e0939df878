"""The six pool keywords are declared once (`aioflow.pools._options.PoolSpec`), and every face takes them so.

`aioflow.open_pool`, `aioflow.execute_graph_async`, the engine's entry point
under it, `aioflow.Executor` and the parallel backends show the keywords
with the record's defaults, check them with the record, and pass them to
the pool they open.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import pytest
from graphs import method_node

import aioflow
import aioflow.parallel as par
import aioflow.scheduler
from aioflow.pools._options import PoolKeywords, PoolSpec

if TYPE_CHECKING:
    from collections.abc import Callable

KEYWORDS = ("pool_type", "max_workers", "scaling_workers", "context", "idle_timeout", "pool_options")
RECORD = dict(PoolSpec._field_defaults)

#: The faces that take all six, and how each takes pool_type.
FACES: dict[str, tuple[Callable[..., Any], inspect._ParameterKind]] = {
    "open_pool": (aioflow.open_pool, inspect.Parameter.POSITIONAL_OR_KEYWORD),
    "Executor": (aioflow.Executor, inspect.Parameter.POSITIONAL_OR_KEYWORD),
    "execute_graph_async": (aioflow.execute_graph_async, inspect.Parameter.KEYWORD_ONLY),
    "scheduler.execute_graph_async": (aioflow.scheduler.execute_graph_async, inspect.Parameter.KEYWORD_ONLY),
}

#: The parallel backends, which take some of them (a backend sizes its pools itself).
BACKENDS: dict[str, tuple[type[Any], set[str]]] = {
    "PoolBackend": (par.PoolBackend, {"pool_type", "context", "scaling_workers", "idle_timeout", "pool_options"}),
    "ThreadBackend": (par.ThreadBackend, {"scaling_workers", "idle_timeout", "pool_options"}),
    "MultiprocessBackend": (par.MultiprocessBackend, {"context", "idle_timeout"}),
}


def test_the_record_holds_the_six_keywords_and_their_type_checkers_view() -> None:
    assert tuple(RECORD) == KEYWORDS
    spec_types = {name: ref.__forward_arg__ for name, ref in PoolSpec.__annotations__.items() if name != "pool_type"}
    assert PoolKeywords.__annotations__.keys() == spec_types.keys()
    for name, annotation in PoolKeywords.__annotations__.items():
        assert annotation.__forward_arg__ == spec_types[name], name


@pytest.mark.parametrize("face", FACES)
def test_every_face_takes_the_six_keywords_with_the_records_defaults(face: str) -> None:
    fn, pool_type_kind = FACES[face]
    parameters = inspect.signature(fn).parameters
    assert {name: parameters[name].default for name in KEYWORDS} == RECORD
    assert parameters["pool_type"].kind is pool_type_kind
    assert all(parameters[name].kind is inspect.Parameter.KEYWORD_ONLY for name in KEYWORDS[1:])
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_parallel_backends_take_theirs_with_the_records_defaults(backend: str) -> None:
    cls, taken = BACKENDS[backend]
    parameters = inspect.signature(cls).parameters
    given = {name: parameters[name].default for name in KEYWORDS if name in parameters}
    assert given.keys() == taken
    assert {name: default for name, default in given.items() if default is not inspect.Parameter.empty} == {
        name: RECORD[name] for name in taken - {"pool_type"}
    }


@pytest.mark.parametrize(
    "face",
    [
        lambda **kw: aioflow.open_pool("thread", **kw),
        lambda **kw: aioflow.Executor("thread", **kw),
        lambda **kw: aioflow.execute_graph({"graph": {"id": "g"}, "nodes": []}, pool_type="thread", **kw),
        lambda **kw: par.PoolBackend("thread", **kw),
        lambda **kw: par.MultiprocessBackend(**kw),
    ],
    ids=["open_pool", "Executor", "execute_graph", "PoolBackend", "MultiprocessBackend"],
)
@pytest.mark.parametrize(("keyword", "value"), [("idle_timeout", 0), ("context", "telepathy")])
def test_every_face_checks_the_keywords_with_the_record(face: Callable[..., Any], keyword: str, value: Any) -> None:
    with pytest.raises(aioflow.OptionError, match=keyword) as info:
        face(**{keyword: value})
    assert info.value.option == keyword  # type: ignore[attr-defined]  # a field AioflowError sets


@pytest.mark.parametrize(
    ("face", "name"),
    [
        (lambda: aioflow.open_pool("thread", max_worker=2), "open_pool"),  # type: ignore[call-arg]
        (lambda: aioflow.Executor("thread", max_worker=2), "Executor"),  # type: ignore[call-arg]
        (lambda: aioflow.execute_graph({"graph": {"id": "g"}, "nodes": []}, max_worker=2), "execute_graph_async"),
    ],
)
def test_a_keyword_that_is_none_of_them_is_a_type_error_naming_the_face(face: Callable[[], Any], name: str) -> None:
    with pytest.raises(TypeError, match=rf"^{name}\(\) got an unexpected keyword argument 'max_worker'$"):
        face()


def test_the_keywords_reach_the_pool_a_graph_execution_opens() -> None:
    graph = {"graph": {"id": "g"}, "nodes": [method_node("n", "tasks.thread_name")]}
    results = aioflow.execute_graph(
        graph, pool_type="thread", max_workers=1, pool_options={"thread_name_prefix": "kw-test"}
    )
    assert results["return_value"].startswith("kw-test")


def test_the_keywords_reach_the_pool_of_an_executor() -> None:
    with aioflow.Executor("thread", max_workers=3, scaling_workers=False, idle_timeout=None) as ex:
        assert ex.pool.name == "thread"
        assert ex.pool.options == aioflow.pools.PoolOptions(max_workers=3, scaling_workers=False, idle_timeout=None)


def test_a_pool_backend_opens_its_pools_with_its_keywords_and_the_maps_worker_count() -> None:
    backend = par.PoolBackend(
        "thread", scaling_workers=False, idle_timeout=5.0, pool_options={"thread_name_prefix": "b"}
    )
    try:
        assert list(backend.imap(abs, [-1, -2, -3], max_workers=2)) == [1, 2, 3]
        (pool,) = backend._pools.values()
        expected = aioflow.pools.PoolOptions(
            max_workers=2, scaling_workers=False, idle_timeout=5.0, extra={"thread_name_prefix": "b"}
        )
        assert pool.options == expected
    finally:
        backend.shutdown()
