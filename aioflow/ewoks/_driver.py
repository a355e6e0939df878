"""The driver's side of an execution with ``varinfo``, ``execinfo`` or ``task_options``.

`EwoksRun` is created by `aioflow.execute_graph_async` when one of those
options is given. It checks them before any worker starts, sends the job and
workflow start/end events in the driver (ewokscore's own contexts, so the
order is the reference's: job start, workflow start, the nodes' events from
the workers, workflow end, job end), and tells the scheduler which nodes must
run through ewokscore's task classes:

- every node, when results are persisted (a ``root_uri`` in ``varinfo`` or in
  a node's own ``varinfo``), when event handlers are configured, or when
  ``task_options`` are given: persistence, node events and task options are
  then exactly ewokscore's;
- otherwise only ``class``, ``generated`` and ``notebook`` nodes (the others
  take aioflow's fast path, with the same outputs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._errors import MissingExtraError, NodeError, OptionError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ..graph import Graph

__all__ = ["EwoksRun"]


def _import_ewokscore(what: str) -> None:
    try:
        import ewokscore  # noqa: F401
    except ImportError:
        raise MissingExtraError(what, "ewokscore", "ewoks") from None


class EwoksRun:
    """The Ewoks options of one execution, checked, and the job/workflow event contexts."""

    def __init__(self, graph: Graph, *, varinfo: Any, execinfo: Any, task_options: Any) -> None:
        if varinfo is not None and not isinstance(varinfo, Mapping):
            raise OptionError(
                "varinfo", 'a dict such as {"root_uri": "/data/cache", "scheme": "json"}, or None', varinfo
            )
        if execinfo is not None and not isinstance(execinfo, (Mapping, bool, str)):
            raise OptionError("execinfo", "a dict, a job id string, True, False or None", execinfo)
        if task_options is not None and not isinstance(task_options, Mapping):
            raise OptionError("task_options", "a dict of task constructor keywords, or None", task_options)
        _import_ewokscore("varinfo, execinfo and task_options")
        self.graph = graph
        self.varinfo = dict(varinfo) if varinfo is not None else None
        self.execinfo = execinfo
        self.task_options = dict(task_options) if task_options else None

    def _every_node_through_ewokscore(self, execinfo: Mapping[str, Any] | None) -> bool:
        if self.task_options:
            return True
        if execinfo and execinfo.get("handlers"):
            return True
        if self.varinfo and self.varinfo.get("root_uri"):
            return True
        for node in self.graph.nodes.values():
            node_varinfo = node.attributes.get("varinfo")
            if isinstance(node_varinfo, Mapping) and node_varinfo.get("root_uri"):
                return True
        return False

    @contextlib.contextmanager
    def running(self) -> Iterator[dict[str, Any] | None]:
        """Send the job and workflow events around the execution.

        Yields:
            The context every task call carries when every node must run
            through ewokscore (``{"varinfo", "execinfo", "task_options"}``),
            else ``None``.
        """
        from ewokscore.events import job_context, workflow_context

        with (
            job_context(self.execinfo, engine="aioflow") as job_info,
            workflow_context(job_info, workflow=self.graph.id) as workflow_info,
        ):
            payload = None
            if self._every_node_through_ewokscore(workflow_info):
                payload = {"varinfo": self.varinfo, "execinfo": workflow_info, "task_options": self.task_options}
            try:
                yield payload
            except NodeError as exc:
                # The end events report the task's own error, as ewokscore's engines do.
                for info in (workflow_info, job_info):
                    if info is not None and not info.get("exception"):
                        info["exception"] = exc.error
                raise

    def node_context(self, payload: Mapping[str, Any] | None) -> Mapping[str, Any]:
        """The context of a node that ewokscore runs while the others take the fast path."""
        if payload is not None:
            return payload
        return {"varinfo": self.varinfo, "execinfo": None, "task_options": None}
