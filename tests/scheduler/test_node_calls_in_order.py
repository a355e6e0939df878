"""Where the order of outcomes matters, a node's calls run one at a time, in the order of their firings.

A node with optional links fires once per arriving input. When several
inputs arrive together, its firings are made together; run side by side,
the order of their side effects would depend on the threads' timing (a
reference workflow of ewoksppf reads the last call's inputs from a global).
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import tasks
from graphs import node

import aioflow


def gather_graph(optional: int) -> dict[str, Any]:
    """``req`` (fast, required) and ``opt0``... (slow, optional, cached), all into ``gather``."""
    sleeper = {"default_inputs": [{"name": "seconds", "value": 0.2}, {"name": "value", "value": True}]}
    nodes = [node("req", "tasks.identity", default_inputs=[{"name": "value", "value": True}])]
    nodes += [node(f"opt{i}", "tasks.sleep", **sleeper) for i in range(optional)]
    nodes.append(node("gather", "tasks.record_call"))
    links: list[dict[str, Any]] = [
        {
            "source": "req",
            "target": "gather",
            "data_mapping": [{"source_output": "return_value", "target_input": "req"}],
        }
    ]
    links += [
        {
            "source": f"opt{i}",
            "target": "gather",
            "required": False,
            "cache_if_optional": True,
            "data_mapping": [{"source_output": "return_value", "target_input": f"opt{i}"}],
        }
        for i in range(optional)
    ]
    return {"graph": {"id": "gather"}, "nodes": nodes, "links": links}


@pytest.mark.parametrize("run", range(3))
def test_the_firings_of_one_node_never_overlap_and_run_in_order(run: int) -> None:
    tasks.RECORDED.clear()
    aioflow.execute_graph(gather_graph(optional=3), pool_type="thread", max_workers=8)
    calls = list(tasks.RECORDED)
    # One firing for the required input, then one per optional input as it arrives.
    assert [len(names) for names, _, _ in calls] == [1, 2, 3, 4]
    assert [names for names, _, _ in calls] == [
        ["req"],
        ["opt0", "req"],
        ["opt0", "opt1", "req"],
        ["opt0", "opt1", "opt2", "req"],
    ]
    for (_, _, end), (_, start, _) in itertools.pairwise(calls):
        assert start >= end  # each call started after the previous one ended
