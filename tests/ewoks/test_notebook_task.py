"""``notebook`` tasks: a real notebook (next to this file) run by papermill in the workers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import aioflow
import aioflow.ewoks

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "product.ipynb"

POOLS = [
    pytest.param({"pool_type": "thread"}, id="thread"),
    pytest.param({"pool_type": "process", "context": "spawn", "max_workers": 1}, id="process-spawn"),
]


def notebook_graph(a: int, b: int, output_notebook: Path | None = None, log_file: Path | None = None) -> dict[str, Any]:
    """``a`` reaches the notebook through a link (from a method task), ``b`` is a default input."""
    defaults = [{"name": "b", "value": b}, {"name": "_kernel_name", "value": "python3"}]
    if output_notebook is not None:
        defaults.append({"name": "_output_notebook", "value": str(output_notebook)})
    if log_file is not None:
        defaults.append({"name": "log_file", "value": str(log_file)})
    return {
        "graph": {"id": "nb"},
        "nodes": [
            {
                "id": "source",
                "task_type": "method",
                "task_identifier": "counted_tasks.add_logged",
                "default_inputs": [{"name": "a", "value": a}],
            },
            {"id": "nb", "task_type": "notebook", "task_identifier": str(NOTEBOOK), "default_inputs": defaults},
        ],
        "links": [
            {
                "source": "source",
                "target": "nb",
                "data_mapping": [{"source_output": "return_value", "target_input": "a"}],
            }
        ],
    }


@pytest.mark.parametrize("pool", POOLS)
def test_notebook_task_results(tmp_path: Path, pool: dict[str, Any]) -> None:
    """The notebook runs with its inputs injected; its ``results`` cells give the ``results`` output."""
    output_notebook = tmp_path / "executed.ipynb"
    result = aioflow.execute_graph(notebook_graph(3, 5, output_notebook), **pool)
    # total = a * b + 1; len(terms) + b with terms = [a, b]
    assert result == {"results": {"total": 16, "len(terms) + b": 7}, "output_notebook": str(output_notebook)}
    executed = output_notebook.read_text(encoding="utf-8")
    assert '"injected-parameters"' in executed


def test_notebook_task_through_the_ewoks_door_with_saved_results(tmp_path: Path) -> None:
    """Through ``aioflow.ewoks.execute_graph`` with ``varinfo``: the notebook's outputs are saved and reused."""
    varinfo = {"root_uri": str(tmp_path / "cache"), "scheme": "json"}
    log_file = tmp_path / "executions.log"
    first = aioflow.ewoks.execute_graph(notebook_graph(2, 4, log_file=log_file), varinfo=varinfo, pool_type="thread")
    assert first == {"results": {"total": 9, "len(terms) + b": 6}, "output_notebook": None}
    assert log_file.read_text().split() == ["notebook"]
    assert {"results", "return_value"} <= {p.parent.name for p in (tmp_path / "cache").rglob("*.json")}
    again = aioflow.ewoks.execute_graph(notebook_graph(2, 4, log_file=log_file), varinfo=varinfo, pool_type="thread")
    assert again == first
    assert log_file.read_text().split() == ["notebook"]  # the saved results were reused: no kernel started
