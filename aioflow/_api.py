"""The faces of the engine: `execute_graph_async` and `execute_graph`, as docs/api.md documents them.

They take the engine's options (`aioflow.scheduler.execute_graph_async`)
and the Ewoks ones (``varinfo``, ``execinfo``, ``task_options``), which
they turn into the Ewoks plug-in's execution hooks
(`aioflow.ewoks._hooks.EwoksRun`): the engine knows nothing of Ewoks, and
`aioflow.ewoks` is imported only when one of those options is given.
`execute_graph` runs `execute_graph_async` from synchronous code with the
engine's machinery for that (`aioflow.scheduler.run_execution`: a loop of
its own, a helper thread, or the gevent bridge).
"""

from __future__ import annotations

import contextvars
import sys
from typing import TYPE_CHECKING, Any

from ._errors import OptionError
from .pools._options import takes_pool_keywords
from .scheduler import execute_graph_async as _execute
from .scheduler import run_execution
from .scheduler._sync import loop_for

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Mapping, Sequence
    from typing import Unpack

    from ._results import Results
    from .events import Event
    from .journal import JournalRun
    from .pools import Pool
    from .pools._options import PoolKeywords
    from .scheduler import ExecutionHooks, Steering

__all__ = ["execute_graph", "execute_graph_async"]

# The steering of a run started by `aioflow.start`, set in its task's context
# (`aioflow._handle`); the run takes it, and nothing it starts sees it.
_STEERING: contextvars.ContextVar[Steering | None] = contextvars.ContextVar("aioflow_steering", default=None)


@takes_pool_keywords
async def execute_graph_async(
    graph: Any,
    *,
    inputs: Sequence[Mapping[str, Any]] | None = None,
    outputs: Sequence[Mapping[str, Any]] | None = None,
    merge_outputs: bool = True,
    raise_on_error: bool = True,
    timeout: float | None = None,
    pool_type: str | None = None,
    pool: Pool | None = None,
    max_iterations: int | None = None,
    on_event: Callable[[Event], None] | None = None,
    trace: str | os.PathLike[str] | None = None,
    startargs: Mapping[str, Any] | None = None,
    load_options: Mapping[str, Any] | None = None,
    varinfo: Mapping[str, Any] | None = None,
    execinfo: Any = None,
    task_options: Mapping[str, Any] | None = None,
    journal: str | os.PathLike[str] | JournalRun | None = None,
    resume: str | bool | None = None,
    cache: bool = False,
    node_defaults: Mapping[str, Any] | None = None,
    pools: Mapping[str, Mapping[str, Any] | Pool] | None = None,
    default_pool: str | None = None,
    display: bool | None = None,
    **pool_keywords: Unpack[PoolKeywords],
) -> Results:
    """Execute a graph and return its results.

    Args:
        graph: a `Graph`, or anything `aioflow.load_graph` accepts (dict, JSON
            or YAML file path, JSON string).
        inputs: ``[{"id"|"label"|"all": ..., "name": ..., "value": ...}]``,
            written into the selected nodes' default inputs (start nodes when
            no selector is given).
        outputs: which outputs to return (default: every output of the end
            nodes); see the graph format docs.
        merge_outputs: one merged dict (``True``), or ``{node_id: outputs}``.
        raise_on_error: raise `NodeError` on the first node that fails without
            an ``on_error`` link (``True``), or run every branch that can run
            and report failures in ``Results.errors``.
        timeout: seconds; past it, running tasks are stopped and
            `ExecutionTimeoutError` is raised.
        pool_type, max_workers, scaling_workers, context, idle_timeout, pool_options:
            the pool the graph runs on, opened for this execution: the pool
            keywords of `aioflow.open_pool` (`aioflow.pools._options.PoolSpec`).
        pool: an open pool (`aioflow.open_pool`) to run on instead of opening
            one; it stays open, with its warm workers, for later executions.
        max_iterations: the most times any node may run (a guard against
            runaway loops); ``None`` for no limit.
        on_event: called with an `aioflow.events.Event` for every step.
        trace: write the run's timeline to this file, in the Chrome trace-event
            format (Perfetto, chrome://tracing; docs/observe.md), when the run
            ends, whatever the outcome: one slice per firing, one track per
            worker process. The ``on_event`` callback still sees every event.
        startargs: inputs given to every start node (under its links' data).
        load_options: keyword arguments for `aioflow.load_graph` (``root_dir``...).
        varinfo: ewokscore persistence, e.g. ``{"root_uri": dir, "scheme": "json"}``:
            every task's outputs are saved under ``root_uri``, and a task whose
            outputs are already saved there is not run again (``ewoks`` extra).
        execinfo: ewokscore events (``{"job_id", "handlers", ...}``, a job id,
            ``True`` or ``False``): job and workflow events are sent by this
            process, node events by the workers (``ewoks`` extra).
        task_options: extra keyword arguments for every ewokscore task's
            constructor (``ewoks`` extra).
        journal: record the run, every firing with its inputs' digest, its
            status, times and outputs, in this SQLite file (created if
            missing; see docs/journal.md). A path gives the run a new id;
            pass an `aioflow.journal.JournalRun` to choose it or read it.
        resume: with a journal path: continue run ``resume`` (a run id) of the
            journal, or with ``True`` the latest run of this graph there if it
            did not finish (else the run starts afresh); firings it finished
            are taken from the journal, not run again.
        cache: with a journal path: take a firing's outputs from any earlier
            firing in the journal of the same task, code included, and the
            same inputs (docs/journal.md, "The cache").
        node_defaults: the per-node settings (``timeout``, ``retries``,
            ``retry_delay``, ``retry_on``, ``priority``) of every node that
            does not set them in its ``"aioflow"`` attribute
            (docs/graph-format.md, "Per-node control").
        pools: several pools in one execution: name -> the pool keywords of a
            pool opened for it (``{"pool_type": "process", "max_workers":
            8}``), or an open pool (`aioflow.open_pool`). A node runs on the
            pool its ``"aioflow"`` attribute names (``"pool": "cpu"``), the
            others on ``default_pool``, or on the execution's own pool (the
            keywords above, or ``pool``) without one.
        default_pool: the name in ``pools`` of the pool of the nodes that name
            none (then ``pool`` and the pool keywords are not given).
        display: in a Jupyter notebook (an IPython kernel), show the run's
            progress in the cell's output, updated in place (docs/observe.md,
            "In Jupyter"): ``None``, on unless the environment variable
            ``AIOFLOW_DISPLAY`` is ``0``; ``True``, on; ``False``, off.
            Outside a kernel nothing is shown, whatever the value.

    Returns:
        The selected outputs, as `aioflow.Results` (a dict).

    Raises:
        GraphError: the graph is invalid, or cannot run (no start node, a
            cycle that can never fire).
        OptionError: an option is invalid (checked before any worker starts).
        MissingExtraError: the graph needs an optional package.
        NodeError: a node failed (``raise_on_error=True``); ``.results`` holds
            the outputs of the nodes that finished.
        ExecutionTimeoutError: ``timeout`` expired.
        IterationLimitError: a node would run more than ``max_iterations`` times.
        NodeTimeoutError: is the error of a node that ran past its
            ``timeout`` (wrapped in `NodeError` when it stops the run).
    """
    return await _execute(
        graph,
        inputs=inputs,
        outputs=outputs,
        merge_outputs=merge_outputs,
        raise_on_error=raise_on_error,
        timeout=timeout,
        pool_type=pool_type,
        pool=pool,
        max_iterations=max_iterations,
        on_event=on_event,
        startargs=startargs,
        load_options=load_options,
        hooks=[
            *_display_hooks(display),
            *_journal_hooks(journal, resume, cache),
            *_ewoks_hooks(varinfo, execinfo, task_options),
            *_trace_hooks(trace),
        ],
        node_defaults=node_defaults,
        pools=pools,
        default_pool=default_pool,
        steering=_taken_steering(),
        **pool_keywords,
    )


def _taken_steering() -> Steering | None:
    steering = _STEERING.get()
    if steering is not None:
        _STEERING.set(None)
    return steering


def _journal_hooks(journal: Any, resume: Any = None, cache: Any = False) -> list[ExecutionHooks]:
    """The journal's hooks for the ``journal``, ``resume`` and ``cache`` options, or none (`aioflow.journal` imported only then)."""
    if journal is None:
        if resume is not None and resume is not False:
            raise OptionError("resume", "", resume, "'resume' needs a journal: give journal=FILE too")
        if cache is not False:
            raise OptionError("cache", "", cache, "'cache' needs a journal: give journal=FILE too")
        return []
    from .journal._record import journal_hooks

    return journal_hooks(journal, resume=resume, cache=cache)


def _ewoks_hooks(varinfo: Any, execinfo: Any, task_options: Any) -> list[ExecutionHooks]:
    """The Ewoks plug-in's hooks for these options, or none when none is given."""
    if (varinfo, execinfo, task_options) == (None, None, None):
        return []
    from .ewoks._hooks import EwoksRun

    return [EwoksRun(varinfo=varinfo, execinfo=execinfo, task_options=task_options)]


def _display_hooks(display: Any) -> list[ExecutionHooks]:
    """The notebook display's hook for the ``display`` option, or none.

    Only a process that has imported IPython can be a kernel: elsewhere this
    costs one dict lookup, and `aioflow.observe._notebook` is not imported.
    """
    if display is not None and display is not True and display is not False:
        raise OptionError("display", "True, False or None", display)
    if display is False or "IPython" not in sys.modules:
        return []
    from .observe._notebook import notebook_hooks

    return notebook_hooks(display)


def _trace_hooks(trace: Any) -> list[ExecutionHooks]:
    """The timeline's hook for the ``trace`` option, or none (`aioflow.observe._trace` imported only then)."""
    if trace is None:
        return []
    from .observe._trace import TraceHooks

    return [TraceHooks(trace)]


def execute_graph(graph: Any, *, uvloop: bool | None = None, **options: Any) -> Results:
    """Execute a graph from synchronous code; see `execute_graph_async` for the options.

    Works whether or not an event loop is running in the calling thread.

    Args:
        graph: a `Graph`, or anything `aioflow.load_graph` accepts.
        uvloop: use uvloop when installed (``None``: for a graph of 100 nodes or more, or one
            given as a file or a string), always (``True``), or never (``False``).
        **options: the keyword arguments of `execute_graph_async`.
    """
    return run_execution(lambda: execute_graph_async(graph, **options), options, uvloop=loop_for(graph, uvloop))
