"""The pause of the garbage collector that load_graph holds: scoped, shared, and the caller's state given back."""

from __future__ import annotations

import gc
import json
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pytest

from aioflow import GraphError, load_graph
from aioflow.graph._collector import CollectorPause

if TYPE_CHECKING:
    from pathlib import Path

# Bounds a wait between the two threads of a test; only a hang reaches it.
WAIT = 30.0


@pytest.fixture(autouse=True)
def collector_as_it_was() -> Iterator[None]:
    """Each test sets the collector as it needs; the next one finds it as before."""
    was_enabled = gc.isenabled()
    yield
    if was_enabled:
        gc.enable()
    else:
        gc.disable()


def set_collector(enabled: bool) -> None:
    if enabled:
        gc.enable()
    else:
        gc.disable()


class Recording(Mapping[str, Any]):
    """A graph document that notes whether the collector was on each time it is read."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.seen: list[bool] = []

    def __getitem__(self, key: str) -> Any:
        self.seen.append(gc.isenabled())
        return self.document[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.document)

    def __len__(self) -> int:
        return len(self.document)


GRAPH = {"nodes": [{"id": "a", "task_type": "method", "task_identifier": "tasks.inc"}]}


@pytest.mark.parametrize("enabled", [True, False], ids=["enabled", "disabled"])
def test_the_collector_is_off_inside_and_as_the_caller_left_it_after(enabled: bool) -> None:
    set_collector(enabled)
    with CollectorPause():
        assert not gc.isenabled()
    assert gc.isenabled() is enabled


@pytest.mark.parametrize("enabled", [True, False], ids=["enabled", "disabled"])
def test_an_exception_gives_the_collector_back(enabled: bool) -> None:
    set_collector(enabled)
    with pytest.raises(KeyError), CollectorPause():
        raise KeyError("x")
    assert gc.isenabled() is enabled


def test_holders_leaving_out_of_order_keep_it_off_until_the_last_leaves() -> None:
    """The first holder to leave is not the last: the collector stays off for the other."""
    gc.enable()
    pause = CollectorPause()
    pause.__enter__()
    pause.__enter__()
    assert not gc.isenabled()
    pause.__exit__(None, None, None)
    assert not gc.isenabled()
    pause.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_load_in_another_thread_keeps_the_collector_off_after_the_first_one_ends() -> None:
    """This thread enters first and leaves first: the other thread's pause still holds, until it leaves."""
    gc.enable()
    pause = CollectorPause()
    inside = threading.Event()
    first_left = threading.Event()
    seen: list[bool] = []

    def hold() -> None:
        with pause:
            inside.set()
            first_left.wait(WAIT)
            seen.append(gc.isenabled())

    thread = threading.Thread(target=hold)
    try:
        with pause:
            thread.start()
            assert inside.wait(WAIT)
    finally:
        first_left.set()
        thread.join(WAIT)
    assert not thread.is_alive()
    assert seen == [False]
    assert gc.isenabled()


def test_load_graph_reads_the_document_with_the_collector_paused() -> None:
    gc.enable()
    document = Recording(GRAPH)
    graph = load_graph(document)
    assert list(graph.nodes) == ["a"]
    assert document.seen
    assert not any(document.seen)
    assert gc.isenabled()


@pytest.mark.parametrize("enabled", [True, False], ids=["enabled", "disabled"])
@pytest.mark.parametrize("valid", [True, False], ids=["graph", "graph-error"])
def test_load_graph_leaves_the_collector_as_the_caller_left_it(enabled: bool, valid: bool) -> None:
    set_collector(enabled)
    if valid:
        load_graph(GRAPH)
    else:
        with pytest.raises(GraphError):
            load_graph({"nodes": [{"id": "a"}]})
    assert gc.isenabled() is enabled


def test_the_root_module_package_is_imported_with_the_collector_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding root_module imports its parent packages, whose code the pause leaves alone."""
    package = tmp_path / "collector_root_pkg"
    (package / "graphs").mkdir(parents=True)
    (package / "__init__.py").write_text("import gc\nCOLLECTOR_ON = gc.isenabled()\n", encoding="utf-8")
    (package / "graphs" / "__init__.py").write_text("", encoding="utf-8")
    (package / "graphs" / "g.json").write_text(json.dumps(GRAPH), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("collector_root_pkg", "collector_root_pkg.graphs"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    gc.enable()
    graph = load_graph("g", root_module="collector_root_pkg.graphs")
    assert graph.id == "collector_root_pkg.graphs.g"
    assert sys.modules["collector_root_pkg"].COLLECTOR_ON is True
