"""The engine runs a chain on every pool configuration."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conftest import ExecuteFn


def chain(n: int) -> dict[str, Any]:
    return {
        "graph": {"id": f"chain{n}"},
        "nodes": [{"id": i, "task_type": "method", "task_identifier": "tasks.inc"} for i in range(n)],
        "links": [
            {"source": i, "target": i + 1, "data_mapping": [{"source_output": "return_value", "target_input": "x"}]}
            for i in range(n - 1)
        ],
    }


async def test_chain_returns_last_value(execute: ExecuteFn) -> None:
    """A chain of inc tasks returns its length."""
    assert await execute(chain(20)) == {"return_value": 20}
