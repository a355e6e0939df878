"""The send-ahead planner (`aioflow.scheduler._plan`) beside the state machine: no pool, no event loop.

Each test plays the driver: it fires nodes with the real `ExecutionState`,
tells the planner which calls went to the pool (calls are strings here:
``"call:<node>"`` for a fired node's, ``"ahead:<node>"`` for one sent
ahead) and how they ended, and checks every decision the planner makes:
what it sends ahead, chained to which calls and with which link data,
which call a firing adopts, which calls a failure voids, where the
outputs kept on the workers are.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import pytest

from aioflow import MISSING, load_graph
from aioflow.scheduler._outputs import select_results
from aioflow.scheduler._plan import AheadPlanner, Placed, Send
from aioflow.scheduler._state import ExecutionState, Firing

EX = "executor"

Planner = AheadPlanner[str, str]


def node(nid: str) -> dict[str, Any]:
    return {"id": nid, "task_type": "method", "task_identifier": "tasks.identity"}


def link(source: str, target: str, name: str = "x", **attrs: Any) -> dict[str, Any]:
    """``source``'s output ``v`` to ``target``'s input ``name``."""
    return {"source": source, "target": target, "data_mapping": [{"source_output": "v", "target_input": name}], **attrs}


def graph(nodes: str, *links: dict[str, Any]) -> dict[str, Any]:
    return {"graph": {"id": "g"}, "nodes": [node(n) for n in nodes.split()], "links": list(links)}


def chain(*nodes: str) -> dict[str, Any]:
    return graph(" ".join(nodes), *(link(a, b) for a, b in pairwise(nodes)))


def planned(doc: dict[str, Any], *, keep: bool = False) -> tuple[ExecutionState, Planner]:
    """The state machine of ``doc`` and its planner, on a pool that keeps results on its workers if ``keep``."""
    state = ExecutionState(load_graph(doc))
    plan: Planner | None = AheadPlanner.for_run(state, (), keep)
    assert plan is not None
    return state, plan


def from_(source: int, name: str = "x") -> tuple[int, bool, tuple[tuple[str, str], ...]]:
    """The part of a link built on the worker from ``upstream[source]``'s output ``v``."""
    return (source, False, (("v", name),))


def send_all(plan: Planner, executor: str = EX) -> list[Send[str]]:
    """Send ahead everything the planner proposes now, in its order, as ``ahead:<node>``."""
    sends = []
    while (send := plan.next_ahead(executor)) is not None:
        plan.sent(send, f"ahead:{send.node_id}", executor)
        sends.append(send)
    return sends


def submit(plan: Planner, firing: Firing) -> None:
    """Play the driver for a firing that adopted no call: it goes to the pool as ``call:<node>``."""
    assert plan.adopt(firing.node_id) is None
    assert plan.chain_fired(firing.node_id, EX) is None
    plan.submitted(firing.node_id, f"call:{firing.node_id}", EX)


def fired(firings: list[Firing]) -> list[Any]:
    return [firing.node_id for firing in firings]


def succeed(state: ExecutionState, plan: Planner, firing: Firing, call: str, value: int) -> list[Firing]:
    plan.succeeded(firing.node_id, call, EX, on_workers=False)
    return state.succeeded(firing, {"v": value})


# --------------------------------------------------------------------------- chains


def test_a_chain_is_sent_ahead_link_by_link_and_each_firing_adopts_its_call() -> None:
    state, plan = planned(chain("a", "b", "c", "d"))
    (fa,) = state.start()
    submit(plan, fa)
    sends = send_all(plan)
    assert sends == [
        Send("b", (from_(0),), ("call:a",), False),
        Send("c", (from_(0),), ("ahead:b",), False),
        Send("d", (from_(0),), ("ahead:c",), False),
    ]
    (fb,) = succeed(state, plan, fa, "call:a", 1)
    assert plan.adopt("b") == "ahead:b"
    assert plan.adopt("b") is None  # a call is adopted once
    assert fired(succeed(state, plan, fb, "ahead:b", 2)) == ["c"]
    assert plan.adopt("c") == "ahead:c"
    assert plan.next_ahead(EX) is None  # nothing is sent twice


def test_a_node_whose_inputs_are_all_known_is_sent_when_it_fires() -> None:
    """No predecessor in the pool: nothing to chain to; the node's successor is then chained to its call."""
    state, plan = planned(chain("a", "b", "c"))
    (fa,) = state.start()
    submit(plan, fa)
    (fb,) = succeed(state, plan, fa, "call:a", 1)  # before anything was sent ahead
    assert send_all(plan) == []
    submit(plan, fb)
    assert send_all(plan) == [Send("c", (from_(0),), ("call:b",), False)]


def test_a_node_that_fired_is_not_sent_ahead() -> None:
    """a kept its result on the workers and b fired before the planner looked at a's links: b is not sent twice."""
    state, plan = planned(chain("a", "b"), keep=True)
    (fa,) = state.start()
    plan.submitted("a", "call:a", EX)
    plan.succeeded("a", "call:a", EX, on_workers=True)
    assert fired(state.succeeded_on_workers(fa)) == ["b"]
    assert plan.chain_fired("b", EX) == Send("b", (from_(0),), ("call:a",), True)
    plan.submitted("b", "call:b", EX)
    assert plan.next_ahead(EX) is None


@pytest.mark.parametrize(("executor", "sent"), [(EX, ["b"]), ("a new executor", [])])
def test_a_call_is_chained_only_to_calls_of_its_own_executor(executor: str, sent: list[str]) -> None:
    """a's call went to EX; once the pool has a new executor, b waits for its firing."""
    state, plan = planned(chain("a", "b"))
    (fa,) = state.start()
    submit(plan, fa)
    assert [send.node_id for send in send_all(plan, executor)] == sent


# --------------------------------------------------------------------------- diamonds and joins


def test_a_diamond_sends_the_join_once_with_its_links_in_link_order() -> None:
    """a -> b, a -> c, then c -> d written before b -> d: d's data merges c's, then b's."""
    doc = graph("a b c d", link("a", "b"), link("a", "c"), link("c", "d", "r"), link("b", "d", "l"))
    state, plan = planned(doc)
    (fa,) = state.start()
    submit(plan, fa)
    assert send_all(plan) == [
        Send("b", (from_(0),), ("call:a",), False),
        Send("c", (from_(0),), ("call:a",), False),
        Send("d", (from_(0, "r"), from_(1, "l")), ("ahead:c", "ahead:b"), False),
    ]
    (fb, fc) = succeed(state, plan, fa, "call:a", 1)
    assert [plan.adopt("b"), plan.adopt("c")] == ["ahead:b", "ahead:c"]
    assert succeed(state, plan, fc, "ahead:c", 2) == []
    (fd,) = succeed(state, plan, fb, "ahead:b", 3)
    assert fd.inputs == {"r": 2, "l": 3}
    assert plan.adopt("d") == "ahead:d"


def _b_ahead_then_c_submitted(doc: dict[str, Any]) -> tuple[ExecutionState, Planner, Firing]:
    """Start nodes a and c of ``doc``: a is submitted and b sent ahead behind it, then c is submitted."""
    state, plan = planned(doc)
    fa, fc = state.start()
    submit(plan, fa)
    assert send_all(plan) == [Send("b", (from_(0),), ("call:a",), False)]
    submit(plan, fc)
    return state, plan, fc


def test_a_join_is_sent_once_its_last_predecessor_is_in_the_pool() -> None:
    """a -> b -> d and c -> d, a and c start nodes: d waits until c's call is in the pool."""
    doc = graph("a b c d", link("a", "b"), link("b", "d", "l"), link("c", "d", "r"))
    _, plan, _ = _b_ahead_then_c_submitted(doc)
    assert send_all(plan) == [Send("d", (from_(0, "l"), from_(1, "r")), ("ahead:b", "call:c"), False)]


def test_a_join_takes_the_data_it_knows_and_chains_the_rest() -> None:
    """d's predecessor c already succeeded: its link data goes into the call, in link order; b's is chained."""
    doc = graph("a b c d", link("c", "d", "r"), link("a", "b"), link("b", "d", "l"))
    state, plan, fc = _b_ahead_then_c_submitted(doc)
    assert succeed(state, plan, fc, "call:c", 7) == []
    assert send_all(plan) == [Send("d", ({"r": 7}, from_(0, "l")), ("ahead:b",), False)]


def test_a_join_behind_a_failed_predecessor_is_not_sent() -> None:
    """a -> b -> d and c -> d: c failed before the planner looked at its links; d never fires, so it is not sent."""
    doc = graph("a b c d", link("a", "b"), link("b", "d", "l"), link("c", "d", "r"))
    state, plan, fc = _b_ahead_then_c_submitted(doc)
    assert plan.failed("c", "call:c") == []
    assert state.failed(fc, RuntimeError("c")) == []
    assert send_all(plan) == []


# --------------------------------------------------------------------------- failures


def fork() -> dict[str, Any]:
    """s -> a -> b -> c and s -> x -> y."""
    return graph("s a b c x y", link("s", "a"), link("s", "x"), link("a", "b"), link("b", "c"), link("x", "y"))


def test_a_failure_voids_the_calls_sent_ahead_downstream_of_it_and_only_those() -> None:
    state, plan = planned(fork())
    (fs,) = state.start()
    submit(plan, fs)
    assert [send.node_id for send in send_all(plan)] == ["a", "x", "b", "y", "c"]
    fa, fx = succeed(state, plan, fs, "call:s", 1)
    assert [plan.adopt("a"), plan.adopt("x")] == ["ahead:a", "ahead:x"]
    assert sorted(plan.failed("a", "ahead:a")) == ["ahead:b", "ahead:c"]
    state.failed(fa, RuntimeError("a"))
    assert plan.next_ahead(EX) is None  # b and c are never sent again
    assert fired(succeed(state, plan, fx, "ahead:x", 2)) == ["y"]
    assert plan.adopt("y") == "ahead:y"  # the other branch keeps its call


def test_a_failure_voids_a_join_but_not_its_other_predecessor() -> None:
    doc = graph("a b c d", link("a", "b"), link("a", "c"), link("b", "d", "l"), link("c", "d", "r"))
    state, plan = planned(doc)
    (fa,) = state.start()
    submit(plan, fa)
    assert [send.node_id for send in send_all(plan)] == ["b", "c", "d"]
    assert fired(succeed(state, plan, fa, "call:a", 1)) == ["b", "c"]
    assert [plan.adopt("b"), plan.adopt("c")] == ["ahead:b", "ahead:c"]
    assert plan.failed("c", "ahead:c") == ["ahead:d"]
    assert plan.failed("b", "ahead:b") == []  # d was voided once
    assert plan.adopt("d") is None


def test_a_failure_deep_in_a_chain_voids_only_what_lies_behind_it() -> None:
    state, plan = planned(chain("a", "b", "c", "d"))
    (fa,) = state.start()
    submit(plan, fa)
    assert [send.node_id for send in send_all(plan)] == ["b", "c", "d"]
    (fb,) = succeed(state, plan, fa, "call:a", 1)
    assert plan.adopt("b") == "ahead:b"
    assert fired(succeed(state, plan, fb, "ahead:b", 2)) == ["c"]
    assert plan.adopt("c") == "ahead:c"
    assert plan.failed("c", "ahead:c") == ["ahead:d"]


def test_a_refused_call_voids_nothing_and_its_successors_wait_for_its_firing() -> None:
    """The pool refused a's call (``None``): nothing waited for it; b goes when, if ever, a succeeds."""
    state, plan = planned(chain("a", "b"))
    assert fired(state.start()) == ["a"]
    assert plan.adopt("a") is None
    assert plan.failed("a", None) == []
    assert plan.next_ahead(EX) is None


# --------------------------------------------------------------------------- what is never sent ahead


NEVER_AHEAD = {
    "conditional": link("s", "t", conditions=[{"source_output": "v", "value": 1}], required=True),
    "optional": link("s", "t", required=False),
    "on_error": {"source": "s", "target": "t", "on_error": True, "required": True},
}


@pytest.mark.parametrize("to_t", NEVER_AHEAD.values(), ids=NEVER_AHEAD.keys())
def test_a_node_with_a_conditional_optional_or_error_link_is_never_sent_ahead(to_t: dict[str, Any]) -> None:
    """Beside t, u (a plain link from the same source) is sent ahead: only t is held back."""
    state, plan = planned(graph("s t u", to_t, link("s", "u")))
    (fs,) = state.start()
    submit(plan, fs)
    assert send_all(plan) == [Send("u", (from_(0),), ("call:s",), False)]
    assert "t" not in plan.ahead
    assert plan.chain_fired("t", EX) is None


def test_a_node_run_by_a_hook_with_its_own_runner_is_never_sent_ahead() -> None:
    """Its outputs may carry tokens: neither it nor its successor goes ahead; with nothing else, no planner."""
    state = ExecutionState(load_graph(chain("a", "b", "c")))
    assert AheadPlanner.for_run(state, {"b"}, keeps_results_remote=False) is None
    plan: Planner | None = AheadPlanner.for_run(state, {"c"}, keeps_results_remote=False)
    assert plan is not None
    assert plan.ahead == {"b"}


# --------------------------------------------------------------------------- results kept on the workers


def test_results_kept_on_the_workers_are_chained_to_and_then_fetched_or_lost() -> None:
    """a -> b -> c on a pool that keeps results: each fired node is chained to its predecessor's call."""
    state, plan = planned(chain("a", "b", "c"), keep=True)
    assert all(plan.stays_on_workers(n) for n in "abc")
    (fa,) = state.start()
    assert plan.chain_fired("a", EX) is None
    plan.submitted("a", "call:a", EX)
    plan.succeeded("a", "call:a", EX, on_workers=True)
    (fb,) = state.succeeded_on_workers(fa)
    assert fb.inputs == {"x": MISSING}  # the data is on the workers, not here
    assert plan.adopt("b") is None
    assert plan.chain_fired("b", EX) == Send("b", (from_(0),), ("call:a",), True)
    plan.submitted("b", "call:b", EX)
    plan.succeeded("b", "call:b", EX, on_workers=True)
    (fc,) = state.succeeded_on_workers(fb)
    assert plan.chain_fired("c", EX) == Send("c", (from_(0),), ("call:b",), True)
    plan.submitted("c", "call:c", EX)
    plan.succeeded("c", "call:c", EX, on_workers=True)
    assert state.succeeded_on_workers(fc) == []
    assert plan.on_workers == {n: Placed(f"call:{n}", EX) for n in "abc"}
    assert state.on_workers == {"a", "b", "c"}

    lost = ConnectionError("the worker that held b is gone")
    state.output_fetched("c", {"v": 3})
    state.output_lost("b", lost)
    assert state.on_workers == {"a"}
    results = select_results(state.graph, state, [{"all": True}], merge_outputs=False)
    assert dict(results) == {"a": {}, "b": {}, "c": {"v": 3}}
    assert results.errors == {"b": lost}
    assert results.executions == {"a": 1, "b": 1, "c": 1}


def test_a_fired_node_whose_inputs_are_all_here_is_sent_with_them() -> None:
    """c kept its result on the workers; a did not (it has a conditional link): b, a's successor, is not chained."""
    doc = graph(
        "a b x c d",
        link("a", "b"),
        link("a", "x", conditions=[{"source_output": "v", "value": 1}], required=True),
        link("c", "d"),
    )
    state, plan = planned(doc, keep=True)
    assert not plan.stays_on_workers("a")
    fa, fc = state.start()
    plan.submitted("c", "call:c", EX)
    plan.succeeded("c", "call:c", EX, on_workers=True)
    assert fired(state.succeeded_on_workers(fc)) == ["d"]
    submit(plan, fa)
    assert fired(succeed(state, plan, fa, "call:a", 1)) == ["b", "x"]
    assert plan.on_workers == {"c": Placed("call:c", EX)}
    assert plan.chain_fired("b", EX) is None


def test_a_node_sent_ahead_behind_a_kept_result_is_chained_to_its_call() -> None:
    state, plan = planned(chain("a", "b", "c"), keep=True)
    (fa,) = state.start()
    plan.submitted("a", "call:a", EX)
    plan.succeeded("a", "call:a", EX, on_workers=True)
    assert fired(state.succeeded_on_workers(fa)) == ["b"]
    plan.submitted("b", "call:b", EX)  # b fired and went without being sent ahead
    assert send_all(plan) == [Send("c", (from_(0),), ("call:b",), True)]
