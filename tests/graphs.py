"""Graph builders and graphs shared by several test modules."""

from __future__ import annotations

from typing import Any


def defaults(**values: Any) -> list[dict[str, Any]]:
    """``default_inputs`` items from keyword arguments."""
    return [{"name": k, "value": v} for k, v in values.items()]


def method_node(node_id: Any, identifier: str, **inputs: Any) -> dict[str, Any]:
    """A ``method`` node with default inputs."""
    return {"id": node_id, "task_type": "method", "task_identifier": identifier, "default_inputs": defaults(**inputs)}


def return_value_link(source: Any, target: Any, target_input: str) -> dict[str, Any]:
    """A link passing ``return_value`` of ``source`` to ``target_input`` of ``target``."""
    return {
        "source": source,
        "target": target,
        "data_mapping": [{"source_output": "return_value", "target_input": target_input}],
    }


# start=2 -> left=inc(2)=3, right=square(2)=4 -> total=add(3, 4)=7
NB_DIAMOND: dict[str, Any] = {
    "graph": {"id": "diamond"},
    "nodes": [
        method_node("start", "tasks.inc", x=1),
        method_node("left", "tasks.inc"),
        method_node("right", "nb_tasks.square"),
        method_node("total", "tasks.add"),
    ],
    "links": [
        return_value_link("start", "left", "x"),
        return_value_link("start", "right", "x"),
        return_value_link("left", "total", "a"),
        return_value_link("right", "total", "b"),
    ],
}


def _loop_link(source: str, target: str, small: bool) -> dict[str, Any]:
    return {
        "source": source,
        "target": target,
        "map_all_data": True,
        "conditions": [{"source_output": "small", "value": small}],
    }


# start -> again (looping on itself while value < limit) -> end. With limit=4:
# start makes value 1, again runs 3 times (2, 3, 4), then end.
COUNTING_LOOP: dict[str, Any] = {
    "graph": {"id": "loop"},
    "nodes": [
        {
            "id": "start",
            "task_type": "ppfmethod",
            "task_identifier": "tasks.ppf_inc_until",
            "default_inputs": defaults(value=0, limit=4),
        },
        {"id": "again", "task_type": "ppfmethod", "task_identifier": "tasks.ppf_inc_until"},
        {"id": "end", "task_type": "ppfport"},
    ],
    "links": [
        _loop_link("start", "again", True),
        _loop_link("again", "again", True),
        _loop_link("again", "end", False),
    ],
}


def node(nid: Any, func: str = "tasks.inc", **attrs: Any) -> dict[str, Any]:
    """A ``method`` node running ``func``, with any other node attributes."""
    return {"id": nid, "task_type": "method", "task_identifier": func, **attrs}


def rv(source: Any, target: Any, name: Any = "x", **attrs: Any) -> dict[str, Any]:
    """A link passing ``return_value`` as input ``name``, with any other link attributes."""
    return {
        "source": source,
        "target": target,
        "data_mapping": [{"source_output": "return_value", "target_input": name}],
        **attrs,
    }


def failing_before_a_chain(bad: dict[str, Any], length: int = 3) -> dict[str, Any]:
    """The node ``bad`` (id ``"bad"``), a chain of ``length`` ``inc`` nodes after it, and an error handler.

    Every node of the chain can be sent ahead of ``bad``; none of them may
    count as run when ``bad`` fails, while the handler (``tasks.echo``) runs.
    """
    return {
        "nodes": [bad, *(node(i) for i in range(length)), node("handler", "tasks.echo")],
        "links": [
            rv("bad", 0),
            *(rv(i, i + 1) for i in range(length - 1)),
            {"source": "bad", "target": "handler", "on_error": True, "map_all_data": True},
        ],
    }
