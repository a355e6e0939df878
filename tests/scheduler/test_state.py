"""The firing rule (spec §6.3) on the pure state machine: no pools, no event loop."""

from __future__ import annotations

from typing import Any

import pytest

from aioflow import load_graph
from aioflow.scheduler._state import ExecutionState, Firing, IterationLimitReached


def node(nid: Any, **attrs: Any) -> dict[str, Any]:
    return {"id": nid, "task_type": "method", "task_identifier": "tasks.identity", **attrs}


def mapped(source: Any, target: Any, name: str, **attrs: Any) -> dict[str, Any]:
    return {"source": source, "target": target, "data_mapping": [{"source_output": "v", "target_input": name}], **attrs}


def fired(firings: list[Firing]) -> list[tuple[Any, dict[str, Any]]]:
    return [(f.node_id, f.dynamic_inputs) for f in firings]


def make(doc: dict[str, Any], **kwargs: Any) -> ExecutionState:
    return ExecutionState(load_graph(doc), **kwargs)


def test_start_fires_every_start_node_once() -> None:
    """Each start node fires once with the start inputs."""
    state = make({"nodes": [node("a"), node("b")]}, start_inputs={"s": 1})
    assert fired(state.start()) == [("a", {"s": 1}), ("b", {"s": 1})]


def test_target_waits_for_every_required_link() -> None:
    """A node fires only when all of its required in-links delivered, with every cached value."""
    state = make({"nodes": [node("a"), node("b"), node("c")], "links": [mapped("a", "c", "x"), mapped("b", "c", "y")]})
    fa, fb = state.start()
    assert state.succeeded(fa, {"v": 1}) == []
    assert fired(state.succeeded(fb, {"v": 2})) == [("c", {"x": 1, "y": 2})]


def test_defaults_lie_under_link_data() -> None:
    """Default inputs fill what links do not give, and links override them."""
    state = make(
        {
            "nodes": [node("a"), node("b", default_inputs=[{"name": "x", "value": 0}, {"name": "z", "value": 5}])],
            "links": [mapped("a", "b", "x")],
        }
    )
    (fa,) = state.start()
    (fb,) = state.succeeded(fa, {"v": 1})
    assert fb.inputs == {"x": 1, "z": 5}
    assert fb.dynamic_inputs == {"x": 1}


def test_optional_triggers_before_first_firing_are_buffered() -> None:
    """Optional deliveries before the first firing fire the node once each, once required data is there."""
    doc = {
        "nodes": [node("r"), node("o1"), node("o2"), node("t")],
        "links": [
            mapped("r", "t", "req"),
            mapped("o1", "t", "opt", required=False),
            mapped("o2", "t", "opt", required=False),
        ],
    }
    state = make(doc)
    fr, fo1, fo2 = state.start()
    assert state.succeeded(fo1, {"v": "first"}) == []
    assert state.succeeded(fo2, {"v": "second"}) == []
    result = fired(state.succeeded(fr, {"v": 0}))
    assert result == [("t", {"req": 0, "opt": "first"}), ("t", {"req": 0, "opt": "second"})]


def test_after_first_firing_every_arrival_fires_with_the_retained_trigger() -> None:
    """After the first firing, each delivery fires again; the latest optional data is retained."""
    doc = {
        "nodes": [node("r"), node("o"), node("t")],
        "links": [mapped("r", "t", "req"), mapped("o", "t", "opt", required=False)],
    }
    state = make(doc)
    fr, fo = state.start()
    assert fired(state.succeeded(fr, {"v": 1})) == [("t", {"req": 1})]
    assert fired(state.succeeded(fo, {"v": "x"})) == [("t", {"req": 1, "opt": "x"})]
    # A new required delivery reuses the retained optional data.
    assert fired(state.succeeded(Firing("r", 2, {}, {}), {"v": 2})) == [("t", {"req": 2, "opt": "x"})]


def test_cache_if_optional_keeps_data_for_later_firings() -> None:
    """An optional link with cache_if_optional contributes its last data to every firing."""
    doc = {
        "nodes": [node("r"), node("c"), node("t")],
        "links": [mapped("r", "t", "req"), mapped("c", "t", "cached", required=False, cache_if_optional=True)],
    }
    state = make(doc)
    fr, fc = state.start()
    assert state.succeeded(fc, {"v": "kept"}) == []
    assert fired(state.succeeded(fr, {"v": 1})) == [("t", {"req": 1, "cached": "kept"})]


def test_no_required_links_fires_on_every_arrival() -> None:
    """A join after conditional branches fires once per arrival."""
    doc = {
        "nodes": [node("a"), node("b"), node("j")],
        "links": [mapped("a", "j", "x", required=False), mapped("b", "j", "y", required=False)],
    }
    state = make(doc)
    fa, fb = state.start()
    assert fired(state.succeeded(fa, {"v": 1})) == [("j", {"x": 1})]
    assert fired(state.succeeded(fb, {"v": 2})) == [("j", {"y": 2})]
    assert state.executions["j"] == 2


def test_forced_start_node_with_predecessors_waits_for_required_links() -> None:
    """A start trigger on a node with required in-links does not fire it alone."""
    doc = {"nodes": [node("a"), node("b", force_start_node=True)], "links": [mapped("a", "b", "x")]}
    state = make(doc, start_inputs={"s": 0})
    (fa,) = fired(state.start())
    assert fa[0] == "a"
    assert fired(state.succeeded(Firing("a", 1, {}, {}), {"v": 1})) == [("b", {"s": 0, "x": 1})]


def test_trigger_only_link_passes_no_data() -> None:
    """A link without data_mapping or map_all_data only triggers."""
    state = make({"nodes": [node("a"), node("b")], "links": [{"source": "a", "target": "b"}]})
    (fa,) = state.start()
    assert fired(state.succeeded(fa, {"v": 1, "w": 2})) == [("b", {})]


def test_map_all_data_passes_every_output() -> None:
    """map_all_data gives every output under its own name."""
    state = make({"nodes": [node("a"), node("b")], "links": [{"source": "a", "target": "b", "map_all_data": True}]})
    (fa,) = state.start()
    assert fired(state.succeeded(fa, {"v": 1, "w": 2})) == [("b", {"v": 1, "w": 2})]


@pytest.mark.parametrize(
    ("actual", "expected_targets"),
    [(7, ["small"]), (13, ["big"]), (99, ["other"]), ("__other__", ["other"])],
)
def test_else_value_routing(actual: Any, expected_targets: list[str]) -> None:
    """The else branch takes values no other condition names, and the else value itself (spec §3.3)."""
    doc = {
        "nodes": [
            {
                "id": "route",
                "task_type": "ppfmethod",
                "task_identifier": "tasks.ppf_route",
                "conditions_else_value": "__other__",
            },
            node("small"),
            node("big"),
            node("other"),
        ],
        "links": [
            {
                "source": "route",
                "target": "small",
                "map_all_data": True,
                "conditions": [{"source_output": "d", "value": 7}],
            },
            {
                "source": "route",
                "target": "big",
                "map_all_data": True,
                "conditions": [{"source_output": "d", "value": 13}],
            },
            {
                "source": "route",
                "target": "other",
                "map_all_data": True,
                "conditions": [{"source_output": "d", "value": "__other__"}],
            },
        ],
    }
    state = make(doc)
    (f,) = state.start()
    assert [n for n, _ in fired(state.succeeded(f, {"_ppfdict": {"d": actual}}))] == expected_targets


def test_condition_on_a_missing_output_does_not_hold() -> None:
    """A condition naming an output the node lacks is false, even for the else branch."""
    doc = {
        "nodes": [node("a"), node("b")],
        "links": [{"source": "a", "target": "b", "conditions": [{"source_output": "nope", "value": None}]}],
    }
    state = make(doc)
    (f,) = state.start()
    assert state.succeeded(f, {"v": 1}) == []


def test_conditions_use_python_equality() -> None:
    """1 matches True, as with ==."""
    doc = {
        "nodes": [node("a"), node("b")],
        "links": [{"source": "a", "target": "b", "conditions": [{"source_output": "v", "value": True}]}],
    }
    state = make(doc)
    (f,) = state.start()
    assert len(state.succeeded(f, {"v": 1})) == 1


def test_failure_fires_error_links_with_the_dynamic_inputs() -> None:
    """An on_error link carries the failed firing's dynamic inputs plus WorkflowException (spec §3.4)."""
    doc = {
        "nodes": [node("a"), node("b", default_inputs=[{"name": "d", "value": 1}]), node("h")],
        "links": [mapped("a", "b", "x"), {"source": "b", "target": "h", "on_error": True, "map_all_data": True}],
    }
    state = make(doc)
    (fa,) = state.start()
    (fb,) = state.succeeded(fa, {"v": 5})
    error = ValueError("bad")
    ((target, data),) = fired(state.failed(fb, error))
    assert target == "h"
    assert data["x"] == 5
    assert "d" not in data  # default inputs are not part of the error data
    assert data["WorkflowExceptionInstance"] is error
    assert data["WorkflowException"]["errorMessage"] == "bad"
    assert state.errors == {}
    assert state.handled_errors == {"b": error}


def test_failure_without_error_link_is_recorded() -> None:
    """A failure with no on_error link unlocks nothing and is kept in errors."""
    state = make({"nodes": [node("a"), node("b")], "links": [mapped("a", "b", "x")]})
    (fa,) = state.start()
    error = RuntimeError("x")
    assert state.failed(fa, error) == []
    assert state.errors == {"a": error}
    assert state.outputs == {"a": {}}


def test_iteration_limit() -> None:
    """A node about to exceed max_iterations raises IterationLimitReached."""
    doc = {
        "nodes": [node("a", force_start_node=True)],
        "links": [{"source": "a", "target": "a", "conditions": [{"source_output": "v", "value": 1}]}],
    }
    state = make(doc, max_iterations=2)
    (f1,) = state.start()
    (f2,) = state.succeeded(f1, {"v": 1})
    with pytest.raises(IterationLimitReached) as info:
        state.succeeded(f2, {"v": 1})
    assert (info.value.node_id, info.value.max_iterations) == ("a", 2)
