"""The Ewoks engine face of aioflow: `execute_graph` (ewoksppf's signature) and `AioflowWorkflowEngine`.

Keywords, as ewoksppf names them (docs/ewoks.md has the table):

- mapped: ``inputs``, ``load_options``, ``outputs``, ``merge_outputs``,
  ``varinfo``, ``execinfo``, ``task_options``, ``raise_on_error``, ``timeout``,
  ``pool_type``, ``pool_options`` (its ``context`` is the start method),
  ``max_workers`` (``<= 0``: one worker per node), ``scaling_workers``,
  ``startargs``, ``pre_import`` (import every task in this process first);
- accepted and ignored (no meaning for aioflow): ``stop_on_signals``,
  ``stop_signals``, ``forced_interruption``, ``db_options``;
- aioflow's own, also accepted: ``context``, ``idle_timeout``,
  ``max_iterations``, ``uvloop``, ``on_event``, ``pool``;
- anything else raises `TypeError` naming it (ewoksppf would read it as a
  pool option; aioflow takes pool options only in ``pool_options``).

It runs the engine (`aioflow.scheduler.execute_graph`) with the plug-in's
execution hooks: `aioflow.ewoks._hooks.EwoksRun` for the Ewoks options, and,
for the default result, `aioflow.ewoks._result.PpfResult`: ewoksppf's
result, read from aioflow's execution state, so it is the same on every
run; other ``outputs=``/``merge_outputs=`` select as aioflow's own door does.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ewokscore.engine_interface import WorkflowEngine
from ewokscore.events import job_context
from ewokscore.missing_data import MISSING_DATA

from .._errors import GraphError, NodeError, OptionError
from .._results import MISSING, Results
from ..graph import load_graph
from ..scheduler import execute_graph as _aioflow_execute_graph
from ._convert import from_taskgraph, is_taskgraph
from ._hooks import EwoksRun
from ._result import PpfResult, ewoks_error

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..graph import Graph
    from ..scheduler import ExecutionHooks

__all__ = ["AioflowWorkflowEngine", "execute_graph"]

logger = logging.getLogger("aioflow.ewoks")

# aioflow's own execution keywords, accepted next to ewoksppf's.
_AIOFLOW_OPTIONS = frozenset(
    ("context", "idle_timeout", "max_iterations", "uvloop", "on_event", "pool", "journal", "resume", "cache")
)
# ewoksppf keywords that have no meaning for aioflow (accepted, ignored).
_IGNORED_OPTIONS = ("stop_on_signals", "stop_signals", "forced_interruption", "db_options")


def execute_graph(
    graph: Any,
    inputs: Sequence[Mapping[str, Any]] | None = None,
    load_options: Mapping[str, Any] | None = None,
    pre_import: bool | None = None,
    stop_on_signals: bool = False,
    forced_interruption: bool = False,
    stop_signals: Sequence[Any] | None = None,
    db_options: Mapping[str, Any] | None = None,
    startargs: Mapping[str, Any] | None = None,
    raise_on_error: bool | None = True,
    outputs: Sequence[Mapping[str, Any]] | None = None,
    merge_outputs: bool | None = True,
    timeout: float | None = None,
    varinfo: Mapping[str, Any] | None = None,
    execinfo: Any = None,
    task_options: Mapping[str, Any] | None = None,
    max_workers: int | None = None,
    scaling_workers: bool = True,
    pool_type: str | None = None,
    pool_options: Mapping[str, Any] | None = None,
    **options: Any,
) -> Results:
    """Execute an Ewoks graph with aioflow, taking every keyword ``ewoksppf.execute_graph`` takes.

    Args:
        graph: an ewokscore ``TaskGraph`` (converted in linear time), or anything
            `aioflow.load_graph` accepts.
        inputs: items ``{"name", "value"}`` plus a node selector (spec §6.5).
        load_options: `aioflow.load_graph` keywords (``root_dir``, ``root_module``,
            ``representation``); unused for a ``TaskGraph``.
        pre_import: import every task's class or function in this process before
            anything runs, so an unknown task fails before any worker starts.
        stop_on_signals: ignored (Ctrl-C always stops aioflow's workers).
        forced_interruption: ignored (stopped executions always stop their workers).
        stop_signals: ignored.
        db_options: ignored (pypushflow's database; aioflow has none).
        startargs: inputs given to every start node.
        raise_on_error: raise when a node fails without an ``on_error`` link
            (``None`` is ``True``); with ``False`` the result's ``.errors`` lists
            the failed nodes.
        outputs: which outputs to return (spec §6.6); ``[]`` returns ``{}``. By
            default (with ``merge_outputs``), ewoksppf's result: the end nodes'
            last outputs merged in the order they ran, the last one winning;
            when none succeeded, the first unhandled failure's inputs plus
            ``WorkflowException`` and ``WorkflowExceptionInstance``
            (`aioflow.ewoks._result`). The same on every run.
        merge_outputs: one merged dict, or ``{node_id: outputs}`` (``None`` is ``True``).
        timeout: seconds; past it the workers are stopped and
            `aioflow.ExecutionTimeoutError` is raised.
        varinfo: ewokscore persistence (``root_uri``, ``scheme``).
        execinfo: ewokscore events (``job_id``, ``handlers``, ...).
        task_options: extra keyword arguments of every ewokscore task.
        max_workers: the most tasks at once; ``<= 0`` means one worker per node.
        scaling_workers: start workers on demand and reuse idle ones.
        pool_type: ``thread``, ``process`` (default), ``ndprocess``,
            ``multiprocessing``, ``ndmultiprocessing``, ``billiard``, ``gevent``.
        pool_options: pool keywords; ``context`` is the process start method.
        **options: aioflow's own ``context``, ``idle_timeout``, ``max_iterations``,
            ``uvloop``, ``on_event``, ``pool``, ``journal`` (a run journal:
            a file path or an `aioflow.journal.JournalRun`; see docs/journal.md),
            ``resume`` and ``cache`` (with ``journal`` a path, as
            `aioflow.execute_graph`'s).

    Returns:
        The selected outputs: a dict (`aioflow.Results`), never ``None``.

    Raises:
        TypeError: an unknown keyword.
        ewoksutils.exceptions.TaskExecutionError: a node failed (the message names
            it); ewokscore's ``TaskInputError`` when a required input was missing.
        aioflow.GraphError: the graph is invalid or cannot run.
        aioflow.OptionError: an option has a value it cannot take.
        aioflow.ExecutionTimeoutError: ``timeout`` expired.
    """
    unknown = sorted(set(options) - _AIOFLOW_OPTIONS)
    if unknown:
        names = ", ".join(repr(n) for n in unknown)
        msg = (
            f"aioflow.ewoks.execute_graph() got unknown keyword(s) {names}; "
            "pool keywords go in pool_options={...}, and aioflow's own options are "
            f"{', '.join(sorted(_AIOFLOW_OPTIONS))}"
        )
        raise TypeError(msg)
    ignored = {
        "stop_on_signals": stop_on_signals,
        "forced_interruption": forced_interruption,
        "stop_signals": stop_signals,
        "db_options": db_options,
    }
    for name in _IGNORED_OPTIONS:
        if ignored[name]:
            logger.debug("aioflow ignores the ewoksppf option %s=%r", name, ignored[name])

    with job_context(execinfo, engine="aioflow") as job_info:
        loaded = _load(graph, inputs, load_options)
        if pre_import:
            _pre_import(loaded)
        journal = options.pop("journal", None)
        resume = options.pop("resume", None)
        cache = options.pop("cache", False)
        execute_options = _pool_keywords(loaded, pool_options, options, max_workers)
        hooks: list[ExecutionHooks] = []
        if journal is not None:
            from ..journal._record import journal_hooks

            hooks += journal_hooks(journal, resume=resume, cache=cache)
        elif resume is not None or cache is not False:
            raise OptionError("journal", "a file path when 'resume' or 'cache' is given", journal)
        # None would mean "events on by default" again: the job context decided already.
        hooks.append(
            EwoksRun(varinfo=varinfo, execinfo=job_info if job_info is not None else False, task_options=task_options)
        )
        if merge_outputs is not False and outputs in (None, [{"all": False}]):
            hooks.append(PpfResult())
        try:
            results = _aioflow_execute_graph(
                loaded,
                outputs=outputs,
                merge_outputs=True if merge_outputs is None else merge_outputs,
                raise_on_error=True if raise_on_error is None else raise_on_error,
                timeout=timeout,
                pool_type=pool_type,
                scaling_workers=scaling_workers,
                startargs=startargs,
                hooks=hooks,
                **execute_options,
            )
        except NodeError as exc:
            error = ewoks_error(loaded, exc.node_id, exc.error)
            raise error from error.__cause__
    return _ewoks_results(results, merged=merge_outputs is not False)


def _load(graph: Any, inputs: Sequence[Mapping[str, Any]] | None, load_options: Mapping[str, Any] | None) -> Graph:
    if is_taskgraph(graph):
        return from_taskgraph(graph, inputs=inputs)
    if load_options is not None and not isinstance(load_options, Mapping):
        raise OptionError("load_options", "a dict of load_graph keywords, or None", load_options)
    return load_graph(graph, inputs=inputs, **dict(load_options or {}))


def _pool_keywords(
    graph: Graph, pool_options: Mapping[str, Any] | None, options: dict[str, Any], max_workers: int | None
) -> dict[str, Any]:
    """ewoksppf's pool keywords in aioflow's terms."""
    if pool_options is not None and not isinstance(pool_options, Mapping):
        raise OptionError("pool_options", "a dict of pool keywords, or None", pool_options)
    extra = dict(pool_options or {})
    keywords = dict(options)
    if "context" in extra:
        context = extra.pop("context")
        if keywords.get("context") not in (None, context):
            raise OptionError("context", f"given once (pool_options has context={context!r})", keywords["context"])
        keywords["context"] = context
    if extra:
        keywords["pool_options"] = extra
    if max_workers is not None and not isinstance(max_workers, bool) and isinstance(max_workers, int):
        # ewoksppf: "<= 0" means one worker per actor; here, one per node.
        keywords["max_workers"] = max_workers if max_workers > 0 else max(1, len(graph.nodes))
    elif max_workers is not None:
        keywords["max_workers"] = max_workers  # aioflow reports what is wrong with it
    return keywords


def _pre_import(graph: Graph) -> None:
    """Import every task's class or function in this process (ewoksppf's ``pre_import``)."""
    from ewoksutils.import_utils import import_qualname

    from .._tasks import import_callable

    problems = []
    done: set[Any] = set()
    for node in graph.nodes.values():
        identifier = node.task_identifier
        if node.task_type not in ("class", "method", "ppfmethod") or identifier in done:
            continue
        done.add(identifier)
        try:
            if node.task_type == "class":
                import_qualname(identifier)
            else:
                import_callable(identifier)
        except Exception as exc:
            problems.append(f"node {node.id!r}: cannot import {identifier!r} ({type(exc).__name__}: {exc})")
    if problems:
        raise GraphError(graph.id, problems)


def _ewoks_results(results: Results, *, merged: bool) -> Results:
    """aioflow's `MISSING` (an output a node never set) as ewokscore's ``MISSING_DATA``."""

    def convert(values: Mapping[Any, Any]) -> dict[Any, Any]:
        return {k: MISSING_DATA if v is MISSING else v for k, v in values.items()}

    if merged:
        data = convert(results)
    else:
        data = {nid: convert(values) if isinstance(values, Mapping) else values for nid, values in results.items()}
    return Results(data, errors=results.errors, executions=results.executions)


class AioflowWorkflowEngine(WorkflowEngine):  # type: ignore[misc]
    """The ``aioflow`` engine of ``ewoks execute --engine aioflow`` and ``ewoks.execute_graph(engine="aioflow")``."""

    def execute_graph(
        self,
        graph: Any,
        *,
        inputs: list[dict[str, Any]] | None = None,
        load_options: dict[str, Any] | None = None,
        varinfo: dict[str, Any] | None = None,
        execinfo: Any = None,
        task_options: dict[str, Any] | None = None,
        outputs: list[dict[str, Any]] | None = None,
        merge_outputs: bool | None = True,
        **execute_options: Any,
    ) -> dict[Any, Any]:
        """Execute ``graph`` (a ``TaskGraph`` from the ewoks front end, or any source); see `execute_graph`.

        Returns:
            A plain ``dict``, as the reference engines return (and ``ewoks
            execute`` prints); `execute_graph` returns `aioflow.Results`, which
            also lists the failed nodes.
        """
        results = execute_graph(
            graph,
            inputs=inputs,
            load_options=load_options,
            varinfo=varinfo,
            execinfo=execinfo,
            task_options=task_options,
            outputs=outputs,
            merge_outputs=merge_outputs,
            **execute_options,
        )
        return dict(results)
