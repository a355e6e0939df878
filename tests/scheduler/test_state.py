"""The firing rule (spec §6.3) on the pure state machine: no pools, no event loop."""

from __future__ import annotations

from typing import Any

import pytest

from aioflow import MISSING, load_graph
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


# --------------------------------------------------------------------------- tags


def tagged(firings: list[Firing]) -> list[tuple[Any, dict[str, Any], dict[str, Any] | None]]:
    return [(f.node_id, f.dynamic_inputs, f.input_tags) for f in firings]


def test_without_tags_no_firing_has_any() -> None:
    """Outputs given without tags give firings without input tags (nothing is tracked)."""
    state = make({"nodes": [node("a"), node("b")], "links": [mapped("a", "b", "x")]}, start_inputs={"s": 1})
    (fa,) = state.start()
    assert fa.input_tags is None
    (fb,) = state.succeeded(fa, {"v": 1})
    assert fb.input_tags is None


def test_tags_follow_the_data_mapping_through_required_caches() -> None:
    """A tag is renamed with its value; a required cache keeps it for later firings; defaults and start inputs have none."""
    doc = {
        "nodes": [node("a"), node("b"), node("c", default_inputs=[{"name": "d", "value": 0}])],
        "links": [mapped("a", "c", "x"), mapped("b", "c", "y")],
    }
    state = make(doc, start_inputs={"s": 9})
    fa, fb = state.start()
    assert state.succeeded(fa, {"v": 1, "w": 5}, {"v": "tag-a", "w": "tag-w"}) == []
    ((_, inputs, tags),) = tagged(state.succeeded(fb, {"v": 2}, {"v": "tag-b1"}))
    assert inputs == {"x": 1, "y": 2}
    assert tags == {"x": "tag-a", "y": "tag-b1"}
    # b again: x comes from a's cache, with a's tag; y's tag is b's new one.
    ((_, _, tags),) = tagged(state.succeeded(Firing("b", 2, {}, {}), {"v": 3}, {"v": "tag-b2"}))
    assert tags == {"x": "tag-a", "y": "tag-b2"}
    # b again, without a tag: y's value is new and has none; x keeps a's.
    ((_, inputs, tags),) = tagged(state.succeeded(Firing("b", 3, {}, {}), {"v": 4}))
    assert inputs == {"x": 1, "y": 4}
    assert tags == {"x": "tag-a"}


def test_a_later_value_without_a_tag_removes_the_earlier_tag() -> None:
    """Inputs merge with later entries winning; the tag goes with the winning value, or is gone."""
    doc = {
        "nodes": [node("r"), node("c"), node("t")],
        # The optional cache merges after the required one: c's x wins.
        "links": [mapped("r", "t", "x"), mapped("c", "t", "x", required=False, cache_if_optional=True)],
    }
    state = make(doc)
    fr, fc = state.start()
    assert state.succeeded(fc, {"v": "plain"}) == []
    ((_, inputs, tags),) = tagged(state.succeeded(fr, {"v": "tagged"}, {"v": "tr"}))
    assert inputs == {"x": "plain"}
    assert tags is None
    ((_, inputs, tags),) = tagged(state.succeeded(Firing("c", 2, {}, {}), {"v": "new"}, {"v": "tc"}))
    assert (inputs, tags) == ({"x": "new"}, {"x": "tc"})


def test_tags_follow_optional_caches_and_buffered_deliveries() -> None:
    """cache_if_optional keeps a tag with its data; buffered optional deliveries each fire with their own tags."""
    doc = {
        "nodes": [node("r"), node("c"), node("o"), node("t")],
        "links": [
            mapped("r", "t", "req"),
            mapped("c", "t", "cached", required=False, cache_if_optional=True),
            mapped("o", "t", "opt", required=False),
        ],
    }
    state = make(doc)
    fr, fc, fo = state.start()
    assert state.succeeded(fc, {"v": "kept"}, {"v": "tc"}) == []
    assert state.succeeded(fo, {"v": "o1"}, {"v": "to1"}) == []
    assert state.succeeded(Firing("o", 2, {}, {}), {"v": "o2"}) == []  # buffered without a tag
    result = tagged(state.succeeded(fr, {"v": 0}, {"v": "tr"}))
    assert result == [
        ("t", {"req": 0, "cached": "kept", "opt": "o1"}, {"req": "tr", "cached": "tc", "opt": "to1"}),
        ("t", {"req": 0, "cached": "kept", "opt": "o2"}, {"req": "tr", "cached": "tc"}),
    ]
    # The last buffered delivery is retained, and so is its (absent) tag.
    ((_, inputs, tags),) = tagged(state.succeeded(Firing("r", 2, {}, {}), {"v": 1}, {"v": "tr2"}))
    assert inputs == {"req": 1, "cached": "kept", "opt": "o2"}
    assert tags == {"req": "tr2", "cached": "tc"}
    # A new optional delivery after the first firing is retained with its tag.
    ((_, _, tags),) = tagged(state.succeeded(Firing("o", 3, {}, {}), {"v": "o3"}, {"v": "to3"}))
    assert tags == {"req": "tr2", "cached": "tc", "opt": "to3"}


def test_tags_follow_map_all_data() -> None:
    """map_all_data copies the tag of every output it passes, and only those."""
    state = make({"nodes": [node("a"), node("b")], "links": [{"source": "a", "target": "b", "map_all_data": True}]})
    (fa,) = state.start()
    ((_, inputs, tags),) = tagged(state.succeeded(fa, {"v": 1, "w": 2}, {"v": "tv", "never": "tn"}))
    assert inputs == {"v": 1, "w": 2}
    assert tags == {"v": "tv"}


def test_a_mapped_output_that_was_not_set_keeps_its_tag() -> None:
    """An output given a tag but no value reaches its mapped input as MISSING, with its tag."""
    doc = {
        "nodes": [node("a"), node("b")],
        "links": [
            {
                "source": "a",
                "target": "b",
                "data_mapping": [
                    {"source_output": "v", "target_input": "x"},
                    {"source_output": "unset", "target_input": "y"},
                    {"source_output": "untagged", "target_input": "z"},
                ],
            }
        ],
    }
    state = make(doc)
    (fa,) = state.start()
    ((_, inputs, tags),) = tagged(state.succeeded(fa, {"v": 1, "untagged": 3}, {"v": "tv", "unset": "tu"}))
    assert inputs == {"x": 1, "y": MISSING, "z": 3}
    assert tags == {"x": "tv", "y": "tu"}


def test_error_links_carry_the_failed_inputs_tags_not_the_exceptions() -> None:
    """An on_error link's data: the failed firing's dynamic inputs with their tags, then the exception entries without."""
    doc = {
        "nodes": [node("a"), node("b"), node("h")],
        "links": [
            {
                "source": "a",
                "target": "b",
                "map_all_data": True,
            },
            {"source": "b", "target": "h", "on_error": True, "map_all_data": True},
        ],
    }
    state = make(doc)
    (fa,) = state.start()
    # An input named like an exception entry loses its tag to the entry that replaces it.
    (fb,) = state.succeeded(fa, {"x": 5, "WorkflowException": "shadowed"}, {"x": "tx", "WorkflowException": "tw"})
    assert fb.input_tags == {"x": "tx", "WorkflowException": "tw"}
    ((_, data, tags),) = tagged(state.failed(fb, ValueError("bad")))
    assert data["x"] == 5
    assert data["WorkflowException"]["errorMessage"] == "bad"
    assert tags == {"x": "tx"}


# --------------------------------------------------------------------------- outputs kept on the workers


def kept_chain() -> tuple[ExecutionState, Firing]:
    """a -> b, a's success recorded with its outputs on the workers; returns the state and b's firing."""
    state = make({"nodes": [node("a"), node("b")], "links": [mapped("a", "b", "x")]})
    (fa,) = state.start()
    (fb,) = state.succeeded_on_workers(fa)
    return state, fb


def test_a_success_on_the_workers_fires_the_successors_without_the_data() -> None:
    """The successors fire (their calls take the data from the workers); the outputs are pending."""
    state, fb = kept_chain()
    assert fb.inputs == {"x": MISSING}
    assert state.on_workers == {"a"}
    assert state.outputs == {"a": {}}
    assert state.finished == {"a": True}


def test_outputs_fetched_from_the_workers_are_the_nodes_outputs() -> None:
    state, fb = kept_chain()
    state.succeeded(fb, {"v": 2})
    state.output_fetched("a", {"v": 1})
    assert state.outputs == {"a": {"v": 1}, "b": {"v": 2}}
    assert state.on_workers == set()
    assert state.errors == {}
    assert list(state.finished.items()) == [("a", True), ("b", True)]


def test_outputs_lost_on_the_workers_count_as_the_nodes_failure() -> None:
    """The node is in errors with no outputs; its execution, and what followed, stay as they happened."""
    state, fb = kept_chain()
    state.succeeded(fb, {"v": 2})
    lost = ConnectionError("gone")
    state.output_lost("a", lost)
    assert state.errors == {"a": lost}
    assert state.outputs == {"a": {}, "b": {"v": 2}}
    assert state.on_workers == set()
    assert state.executions == {"a": 1, "b": 1}
    assert state.error_data == {}


@pytest.mark.parametrize("transition", ["fetched", "lost"])
def test_only_outputs_on_the_workers_can_be_fetched_or_lost(transition: str) -> None:
    """Once each, and only for a node whose success left them there."""
    state, fb = kept_chain()
    state.succeeded(fb, {"v": 2})

    def apply(nid: str) -> None:
        if transition == "fetched":
            state.output_fetched(nid, {"v": 0})
        else:
            state.output_lost(nid, RuntimeError("gone"))

    apply("a")
    for nid in ("a", "b"):
        with pytest.raises(ValueError, match=f"node '{nid}' has no outputs on the workers"):
            apply(nid)
    assert state.outputs["b"] == {"v": 2}
