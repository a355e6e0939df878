"""What execution hooks give a node's calls reaches the worker, across a pickle on process pools."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pytest
from graphs import node, rv

from aioflow.scheduler import CallContext, ExecutionHooks, execute_graph_async

if TYPE_CHECKING:
    from aioflow.graph import Node

pytestmark = pytest.mark.parametrize(
    "pool_config",
    [
        {"pool_type": "thread", "max_workers": 2},
        {"pool_type": "process", "max_workers": 2, "context": "spawn"},
    ],
    ids=["thread", "process-spawn"],
)

RUNNER = "hook_tasks:show_context"


class Contexts(ExecutionHooks):
    """Gives node b's calls some data, and, with ``runner``, a runner of their own."""

    def __init__(self, runner: str | None = None) -> None:
        self.runner = runner
        self.asked: list[Any] = []

    def call_context(self, node: Node) -> CallContext | None:
        self.asked.append(node.id)
        if node.id != "b":
            return None
        return CallContext({"job": 7, "label": node.label}, self.runner)


CHAIN = {
    "graph": {"id": "chain"},
    "nodes": [node("a", default_inputs=[{"name": "x", "value": 1}]), node("b", label="the b")],
    "links": [rv("a", "b")],
}


async def test_a_context_reaches_the_worker_through_the_runner_it_names(pool_config: dict[str, Any]) -> None:
    hooks = Contexts(RUNNER)
    results = await execute_graph_async(
        CHAIN, hooks=[hooks], outputs=[{"all": True}], merge_outputs=False, **pool_config
    )
    assert hooks.asked == ["a", "b"]  # once per node, before anything ran
    assert results["a"] == {"return_value": 2}
    b = results["b"]
    assert b["return_value"] == 3  # the kind's runner still ran the task
    assert b["context"] == {"job": 7, "label": "the b"}
    assert b["runner"] == RUNNER
    assert (b["pid"] == os.getpid()) == (pool_config["pool_type"] == "thread")


async def test_the_first_hook_that_gives_a_context_wins(pool_config: dict[str, Any]) -> None:
    first, second = Contexts(RUNNER), Contexts(None)
    results = await execute_graph_async(CHAIN, hooks=[first, second], **pool_config)
    assert results["context"] == {"job": 7, "label": "the b"}
    assert second.asked == ["a"]  # not asked for b, which the first one answered
