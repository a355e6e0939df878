"""Execution hooks: the one seam through which a plug-in takes part in a run of the engine.

A run (`aioflow.scheduler.execute_graph_async`) takes ``hooks=``, a
sequence of `ExecutionHooks`. Each method of the class does nothing by
default; a subclass overrides the ones it needs, at the points of a run:

1. `ExecutionHooks.prepare`: the loaded graph, before the preflight checks
   (the Ewoks plug-in marks ewokscore's fallback start nodes);
2. `ExecutionHooks.running`: a context manager around the whole run, which
   sees how it ended (the Ewoks plug-in sends the job and workflow events);
3. `ExecutionHooks.call_context`: what each node's calls carry to their
   worker, and which function runs them there (the Ewoks plug-in's
   persistence, events and task options);
4. `ExecutionHooks.answer`: a firing's outputs without running it (a
   journal that resumes a run);
5. `ExecutionHooks.observe`: every event of the run, in order, with what a
   journal records of it (`Step`: the firing, its inputs, its outputs);
6. `ExecutionHooks.results`: the run's results, from its final state (the
   Ewoks plug-in's ewoksppf result).

The ``on_event`` callback of a run is one more observer (`EventCallback`).
A task kind that needs hooks names them in the task-kind registry
(`aioflow._kinds.TaskKind.hooks`), and the engine adds them to every run of
a graph that has such a node (the Ewoks plug-in's `EwoksTasks`).

Threads: every method is called in the thread that runs the execution's
event loop, between two steps of the driver, never concurrently with
another hook or with the driver: a hook needs no lock for its own state,
and must not block (a slow hook holds up the whole run). Exceptions: see
each method; none is ever swallowed.

`HookSet` is the engine's side: the hooks of one run, grouped by the
methods they override (as trio groups its instruments), so that a method
no hook overrides costs the driver nothing.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Mapping

    from .._results import Results
    from ..events import Event
    from ..graph import Graph, Node, NodeId
    from ._state import ExecutionState, Firing

__all__ = ["CallContext", "EventCallback", "ExecutionHooks", "HookSet", "Step"]


class CallContext(NamedTuple):
    """What every call of one node carries to its worker, besides its task and inputs.

    A named tuple, as `Step`: immutable records, cheap to define on a first call.

    Attributes:
        data: what the runner reads, as `aioflow._tasks.TaskCall.context`
            (picklable, for process and cluster pools); the engine never
            reads it.
        runner: ``"module:function"`` that runs the node's calls in the
            worker in place of its kind's runner (`TaskCall.runner`);
            ``None``: the kind's. Such a runner may return outputs with
            tokens, so a chaining pool never runs the node ahead.
    """

    data: Any = None
    runner: str | None = None


class Step(NamedTuple):
    """One event of a run as the hooks observe it: the public `Event`, and what a journal records beside it.

    Attributes:
        event: the event, as the ``on_event`` callback receives it
            (kind, node, the node's execution number, time, error).
        firing: for node events, the firing: its sequence number in the
            run (`Firing.order`: the order the state machine made it in,
            which does not depend on timing), its inputs and their tokens;
            ``None`` for graph events.
        outputs: for ``node.finished``, the outputs; ``None`` otherwise,
            and when the outputs stayed on a cluster's workers
            (`aioflow.Pool.keeps_results_remote`).
    """

    event: Event
    firing: Firing | None = None
    outputs: Mapping[Any, Any] | None = None


class ExecutionHooks:
    """Callbacks into one run of the engine; each does nothing until a subclass overrides it.

    An instance may keep per-run state (between `running`'s entry and
    exit): give each run its own instance then. Hooks of one run are
    called in the order of ``hooks=``, the kinds' hooks after them, the
    ``on_event`` callback last.
    """

    def prepare(self, graph: Graph) -> Graph:
        """The graph to run in place of ``graph`` (return it unchanged to keep it).

        Called once, after the graph is loaded and the options are checked,
        before the preflight checks (so a prepared graph may gain start
        nodes) and before any pool opens; each hook gets the graph the
        previous one returned. An exception is raised to the caller as it
        is: nothing has run.
        """
        return graph

    def running(self, graph: Graph) -> contextlib.AbstractAsyncContextManager[None]:
        """An async context manager around the run of ``graph`` (the prepared graph).

        Entered after the preflight checks, before the pool opens (hooks in
        order); exited (in reverse order) once the run is over and the pool
        it opened is closed, with the exception the run raises, if any
        (`aioflow.NodeError`, a timeout, a cancellation...). It must let that
        exception through: the engine raises ``RuntimeError`` in its place
        if it is swallowed. An exception raised on entry is raised to the
        caller, after the contexts already entered are exited with it;
        nothing has run. One raised on exit replaces the run's outcome.
        """
        return contextlib.nullcontext()

    def call_context(self, node: Node) -> CallContext | None:
        """What the calls of ``node`` carry to their worker, or ``None``.

        Called once per node and run, after `running` is entered and before
        the first call is sent; the first hook that returns a context for a
        node gives it, the later ones are not asked. An exception is raised
        to the caller: no task has run.
        """
        return None

    def answer(self, node: Node, firing: Firing) -> Mapping[Any, Any] | None:
        """The outputs of ``firing`` without running it, or ``None`` to run it.

        Called for each firing when it is due to be sent to the pool, after
        its ``node.started`` event; the first hook that answers gives the
        outputs, which the state machine then takes as a worker's (a
        ``node.finished`` event follows). While a run has a hook that
        answers, a chaining pool runs no node ahead of its firing. An
        exception stops the run, as a failed node does (the running tasks
        are stopped), and is raised to the caller.
        """
        return None

    #: Whether `observe` reads ``node.queued`` events: a run whose observers all say
    #: no makes none (one event less per firing).
    wants_queued: ClassVar[bool] = True

    def observe(self, step: Step) -> None:
        """See one event of the run (``step.event``), with its firing and outputs.

        Called for every event, in the order of the run (`aioflow.events`):
        ``graph.started``, then each firing's ``node.queued`` (unless no
        observer `wants_queued`), ``node.started``, ``node.retried`` events
        and its end, then ``graph.finished`` (always the last). An exception
        stops the run, as the ``on_event`` callback's does, and is raised to
        the caller; the later hooks do not see that event.
        """

    def results(self, state: ExecutionState) -> Results | None:
        """The run's results, built from its final state, or ``None`` for ``outputs=``/``merge_outputs=``.

        Called once the run is over, whether it succeeded or not (the
        results a `aioflow.NodeError` carries come from here too); the
        first hook that returns results gives them. An exception is raised
        to the caller in place of the results.
        """
        return None


class EventCallback(ExecutionHooks):
    """The ``on_event`` callback of a run, as an observer."""

    def __init__(self, callback: Callable[[Event], None]) -> None:
        self.callback = callback

    def observe(self, step: Step) -> None:
        self.callback(step.event)


def _overriding(hooks: tuple[ExecutionHooks, ...], method: str) -> tuple[ExecutionHooks, ...]:
    default = getattr(ExecutionHooks, method)
    return tuple(hook for hook in hooks if getattr(type(hook), method) is not default)


class HookSet:
    """The hooks of one run, grouped by the methods they override.

    Attributes:
        hooks: every hook, in order.
        answering: the hooks that override `ExecutionHooks.answer`.
        observing: the hooks that override `ExecutionHooks.observe`.
        queued: whether one of them `wants_queued`.
    """

    __slots__ = ("_contexts", "_preparing", "_results", "_wrapping", "answering", "hooks", "observing", "queued")

    def __init__(self, hooks: Iterable[ExecutionHooks]) -> None:
        self.hooks = tuple(hooks)
        self._preparing = _overriding(self.hooks, "prepare")
        self._wrapping = _overriding(self.hooks, "running")
        self._contexts = _overriding(self.hooks, "call_context")
        self.answering = _overriding(self.hooks, "answer")
        self.observing = _overriding(self.hooks, "observe")
        self.queued = any(hook.wants_queued for hook in self.observing)
        self._results = _overriding(self.hooks, "results")

    def prepare(self, graph: Graph) -> Graph:
        for hook in self._preparing:
            graph = hook.prepare(graph)
        return graph

    @contextlib.asynccontextmanager
    async def running(self, graph: Graph) -> AsyncIterator[None]:
        """Every hook's `ExecutionHooks.running` around the run, the first one outermost."""
        finished = False
        async with contextlib.AsyncExitStack() as stack:
            for hook in self._wrapping:
                await stack.enter_async_context(hook.running(graph))
            yield
            finished = True
        if not finished:
            msg = "an execution hook's running() swallowed the exception that ended the run"
            raise RuntimeError(msg)

    def call_contexts(self, graph: Graph) -> dict[NodeId, CallContext]:
        """Node id -> the context its calls carry, for the nodes a hook gives one."""
        contexts: dict[NodeId, CallContext] = {}
        for hook in self._contexts:
            for nid, node in graph.nodes.items():
                if nid not in contexts:
                    context = hook.call_context(node)
                    if context is not None:
                        contexts[nid] = context
        return contexts

    def answer(self, node: Node, firing: Firing) -> Mapping[Any, Any] | None:
        for hook in self.answering:
            outputs = hook.answer(node, firing)
            if outputs is not None:
                return outputs
        return None

    def observe(self, step: Step) -> None:
        for hook in self.observing:
            hook.observe(step)

    def results(self, state: ExecutionState) -> Results | None:
        for hook in self._results:
            results = hook.results(state)
            if results is not None:
                return results
        return None
