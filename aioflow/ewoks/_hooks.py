"""The Ewoks plug-in's execution hooks: what a run needs from ewokscore, plugged into the engine.

- `EwoksTasks`: the hooks of ewokscore's task kinds (``class``,
  ``generated``, ``notebook``), which the task-kind registry names
  (`aioflow._kinds.TaskKind.hooks`), so the engine adds them to every run
  of a graph that has such a node. They mark ewokscore's fallback start
  nodes (`aioflow.ewoks._start`), and give the calls of those kinds the
  node's attributes, which ewokscore's task classes read.
- `EwoksRun`: the same, with the Ewoks options of one execution
  (``varinfo``, ``execinfo``, ``task_options``), given by the faces that
  take them (`aioflow.execute_graph`, `aioflow.ewoks.execute_graph`). It
  checks them before any worker starts, sends the job and workflow
  start/end events around the run (ewokscore's own contexts, so the order
  is the reference's: job start, workflow start, the nodes' events from the
  workers, workflow end, job end), and gives every call its Ewoks context:

  - to every node, run by ewokscore's task classes, when results are
    persisted (a ``root_uri`` in ``varinfo`` or in a node's own
    ``varinfo``), when event handlers are configured, or when
    ``task_options`` are given: persistence, node events and task options
    are then exactly ewokscore's;
  - otherwise to the nodes of ewokscore's kinds only (the others take
    aioflow's fast path, with the same outputs).

The context a call carries (`aioflow.scheduler.CallContext.data`, read by
`aioflow.ewoks._worker.run_ewoks_task`) is ``{"node_attrs", "varinfo",
"execinfo", "task_options"}``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._errors import MissingExtraError, NodeError, OptionError
from .._kinds import KINDS
from ..scheduler import CallContext, ExecutionHooks
from ._start import with_class_start_nodes
from ._worker import run_ewoks_task

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ..graph import Graph, Node

__all__ = ["EwoksRun", "EwoksTasks"]

# The runner of the calls that ewokscore's task classes run, and the kinds it runs.
_RUNNER = f"{run_ewoks_task.__module__}:{run_ewoks_task.__name__}"
_EWOKSCORE_KINDS = frozenset(name for name, kind in KINDS.items() if kind.runner == _RUNNER)


def _node_attrs(node: Node) -> dict[str, Any]:
    """The node's attributes as ewokscore's task classes read them."""
    attrs = dict(node.attributes)
    if node.task_generator is not None:
        attrs["task_generator"] = node.task_generator
    return attrs


class EwoksTasks(ExecutionHooks):
    """The hooks every run of a graph with ewokscore's kinds needs (the registry names them)."""

    def prepare(self, graph: Graph) -> Graph:
        """ewokscore's fallback start nodes, when the graph has no start node (`with_class_start_nodes`)."""
        return with_class_start_nodes(graph)

    def call_context(self, node: Node) -> CallContext | None:
        """The node's attributes, for the nodes of ewokscore's kinds."""
        if node.task_type not in _EWOKSCORE_KINDS:
            return None
        return CallContext({"node_attrs": _node_attrs(node), "varinfo": None, "execinfo": None, "task_options": None})


def _import_ewokscore(what: str) -> None:
    try:
        import ewokscore  # noqa: F401
    except ImportError:
        raise MissingExtraError(what, "ewokscore", "ewoks") from None


class EwoksRun(EwoksTasks):
    """One execution's Ewoks options, its job and workflow events, and the context of its calls. Used once."""

    def __init__(self, *, varinfo: Any, execinfo: Any, task_options: Any) -> None:
        self._varinfo = varinfo
        self._execinfo = execinfo
        self._task_options = task_options
        # Set while the run goes on (`running`): the options every call
        # carries, and whether every node runs through ewokscore.
        self._context: dict[str, Any] = {}
        self._every_node = False

    def _check(self) -> None:
        """Refuse options of the wrong type, and a missing ewokscore, before any worker starts."""
        varinfo, execinfo, task_options = self._varinfo, self._execinfo, self._task_options
        if varinfo is not None and not isinstance(varinfo, Mapping):
            raise OptionError(
                "varinfo", 'a dict such as {"root_uri": "/data/cache", "scheme": "json"}, or None', varinfo
            )
        if execinfo is not None and not isinstance(execinfo, (Mapping, bool, str)):
            raise OptionError("execinfo", "a dict, a job id string, True, False or None", execinfo)
        if task_options is not None and not isinstance(task_options, Mapping):
            raise OptionError("task_options", "a dict of task constructor keywords, or None", task_options)
        _import_ewokscore("varinfo, execinfo and task_options")

    def _every_node_through_ewokscore(self, graph: Graph, execinfo: Mapping[str, Any] | None) -> bool:
        if self._task_options:
            return True
        if execinfo and execinfo.get("handlers"):
            return True
        if self._varinfo and self._varinfo.get("root_uri"):
            return True
        for node in graph.nodes.values():
            node_varinfo = node.attributes.get("varinfo")
            if isinstance(node_varinfo, Mapping) and node_varinfo.get("root_uri"):
                return True
        return False

    @contextlib.asynccontextmanager
    async def running(self, graph: Graph) -> AsyncIterator[None]:
        """Check the options, then send the job and workflow events around the run.

        A failed node's end events report the task's own error, as
        ewokscore's engines do.
        """
        self._check()
        from ewokscore.events import job_context, workflow_context

        varinfo = dict(self._varinfo) if self._varinfo is not None else None
        task_options = dict(self._task_options) if self._task_options else None
        with (
            job_context(self._execinfo, engine="aioflow") as job_info,
            workflow_context(job_info, workflow=graph.id) as workflow_info,
        ):
            self._every_node = self._every_node_through_ewokscore(graph, workflow_info)
            if self._every_node:
                self._context = {"varinfo": varinfo, "execinfo": workflow_info, "task_options": task_options}
            else:
                self._context = {"varinfo": varinfo, "execinfo": None, "task_options": None}
            try:
                yield
            except NodeError as exc:
                for info in (workflow_info, job_info):
                    if info is not None and not info.get("exception"):
                        info["exception"] = exc.error
                raise

    def call_context(self, node: Node) -> CallContext | None:
        """Every node's context, run by ewokscore (see the module docstring), or that of ewokscore's kinds only."""
        if self._every_node:
            return CallContext({"node_attrs": _node_attrs(node), **self._context}, _RUNNER)
        if node.task_type not in _EWOKSCORE_KINDS:
            return None
        return CallContext({"node_attrs": _node_attrs(node), **self._context})
