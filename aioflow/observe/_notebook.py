"""A run's live display in a Jupyter notebook: progress, counts and failures, updated in place in the cell's output.

`NotebookDisplay` is an execution hook (`aioflow.scheduler.ExecutionHooks`)
that `aioflow.execute_graph` and `aioflow.execute_graph_async` add to a run
started in an IPython kernel (`notebook_hooks`; ``display=False`` or
``AIOFLOW_DISPLAY=0`` turns it off). `RunProgress` is what it shows: the
state of the run, kept from its events, rendered as HTML (``_repr_html_``)
and as text (``__repr__``).

Actors and threads:

- Every method of the hook runs in the thread of the run's event loop: the
  kernel's own loop for ``await execute_graph_async(...)``, the helper
  thread of `aioflow.scheduler.run_execution` for ``execute_graph(...)`` in
  a cell (the kernel's loop is running there). Only that thread touches the
  `RunProgress`, so it needs no lock.
- IPython's display publisher sends on the kernel's iopub channel, which is
  safe from any thread (ipykernel hands each message to its IO thread); a
  thread that never set a parent header of its own, as the helper thread,
  sends with the one the kernel set last: the cell's. The display and its
  updates therefore land in the cell that started the run, from either
  thread.

Cost: `NotebookDisplay.observe` is O(1) per event (a few dict operations,
a flag). A timer on the run's loop sends an update every `UPDATE_INTERVAL`
at most, and only when something changed (or the elapsed time moved by
`CLOCK_REFRESH`); leaving the run sends the final one, whatever ended it
(success, a failed node, a timeout, a cancellation, an interrupt). After
the run the output stays as it was last sent: a static summary.

A display that fails (a kernel whose iopub went away) never stops the run:
the hook stops updating, and says why in a `RuntimeWarning`.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import os
import sys
import time
import warnings
from typing import TYPE_CHECKING, Any

from .._errors import ExecutionTimeoutError, NodeError
from ..scheduler import ExecutionHooks

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from ..events import Event
    from ..graph import Graph, NodeId
    from ..scheduler import Step

__all__ = ["NotebookDisplay", "RunProgress", "in_kernel", "notebook_hooks"]

#: The least time between two updates of the display, in seconds: fast enough
#: to look live, slow enough that a run of many short tasks sends a few
#: messages a second, not one per event.
UPDATE_INTERVAL = 0.25

#: With no event, the display is still updated this often (seconds), so
#: that the elapsed time moves while long tasks run.
CLOCK_REFRESH = 1.0

#: Graphs of at most this many nodes get a row per node; larger ones only
#: counts (a table of hundreds of rows is neither readable nor cheap to send).
NODE_TABLE_LIMIT = 50

#: The failed nodes listed with their error; more are counted.
FAILED_SHOWN = 10

#: The longest error one-liner shown, in characters.
ERROR_WIDTH = 200

# AIOFLOW_DISPLAY values that turn the display off (case-insensitive).
_OFF = frozenset(("0", "false", "no", "off"))

# State of a node -> its colour (HTML), shared by the bar, the badges and the table.
_COLOURS = {
    "waiting": "#9ca3af",
    "queued": "#a78bfa",
    "running": "#2563eb",
    "retrying": "#d97706",
    "finished": "#16a34a",
    "failed": "#dc2626",
    "cancelled": "#6b7280",
    "stopped": "#78716c",
    "not run": "#9ca3af",
}

# The run's status -> its colour.
_STATUS_COLOURS = {
    "starting": "#6b7280",
    "running": "#2563eb",
    "finished": "#16a34a",
    "finished with errors": "#d97706",
    "failed": "#dc2626",
    "timed out": "#dc2626",
    "cancelled": "#6b7280",
    "interrupted": "#6b7280",
}

# Separates the parts of a node's chip.
_DOT = " \u00b7 "

# Node states counted as done in the progress.
_DONE = ("finished", "failed", "cancelled")


def in_kernel() -> bool:
    """Whether this process is an IPython kernel (a notebook's, a console's), without importing IPython.

    Only a process that has imported IPython can be one; then its shell is
    a ``ZMQInteractiveShell`` (or a subclass, as Colab's), or was started by
    ``IPKernelApp``. A terminal IPython, or a script that imports IPython,
    is not a kernel.
    """
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    if get_ipython is None:
        return False
    try:
        shell = get_ipython()
    except Exception:
        return False
    if shell is None:
        return False
    if any(cls.__name__ == "ZMQInteractiveShell" for cls in type(shell).__mro__):
        return True
    try:
        return "IPKernelApp" in shell.config
    except Exception:
        return False


def turned_off_by_environment() -> bool:
    """Whether ``AIOFLOW_DISPLAY`` turns the display off (``0``, ``false``, ``no``, ``off``)."""
    return os.environ.get("AIOFLOW_DISPLAY", "").strip().lower() in _OFF


def notebook_hooks(display: bool | None) -> list[ExecutionHooks]:
    """The hook of a run's live display, or none.

    Args:
        display: ``None``: on in a kernel unless ``AIOFLOW_DISPLAY`` turns it
            off; ``True``: on in a kernel whatever ``AIOFLOW_DISPLAY`` says;
            ``False``: off. Outside a kernel there is nothing to display on,
            and no display is made.
    """
    if display is False or (display is None and turned_off_by_environment()) or not in_kernel():
        return []
    return [NotebookDisplay()]


def one_line(error: BaseException | None) -> str:
    """``Type: first line of the message``, at most `ERROR_WIDTH` characters."""
    if error is None:
        return ""
    text = str(error).strip()
    line = f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
    return line if len(line) <= ERROR_WIDTH else line[: ERROR_WIDTH - 1] + "\u2026"


def duration(seconds: float) -> str:
    """A duration for people: ``0.42 s``, ``12.3 s``, ``2 min 05 s``, ``1 h 02 min``."""
    seconds = max(seconds, 0.0)
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


class RunProgress:
    """The state of one run as its display shows it, kept up to date from its events.

    Nodes have a state: ``waiting`` (not started yet, or never: a branch
    a condition did not take), ``queued``, ``running``, ``retrying``,
    ``finished``, ``failed``, ``cancelled``, or ``stopped`` (it was running
    when the run ended, as a failed node or a timeout ends it); once the run
    is over, a node that never started is ``not run``. A node of a loop goes
    back to ``running`` each time it fires again. The counts of firings
    (``finished``, ``failed``, ``retried``) count every firing, so a loop's
    node counts once per time it ran. Unknown event kinds are ignored.

    Args:
        clock: the time in seconds, as ``time.monotonic`` (the events' clock).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.graph_id = ""
        self.total = 0
        self.status = "starting"
        self.run_error = ""
        self.started_at = clock()
        self.ended_at: float | None = None
        #: Firings running now, and by kind of end.
        self.running = 0
        self.finished = 0
        self.failed = 0
        self.retried = 0
        self.states: dict[NodeId, str] = {}
        self.by_state: dict[str, int] = dict.fromkeys(_COLOURS, 0)
        self.errors: dict[NodeId, str] = {}
        self._active: dict[NodeId, int] = {}
        self._runs: dict[NodeId, int] = {}
        self._began: dict[NodeId, float] = {}
        self._took: dict[NodeId, float] = {}

    def begin(self, graph: Graph) -> None:
        """The run of ``graph`` is about to start: every node waits."""
        self.graph_id = graph.id
        self.total = len(graph.nodes)
        self.started_at = self.clock()
        for node_id in graph.nodes:
            self._set(node_id, "waiting")

    def record(self, event: Event) -> None:
        """Take one event into account (O(1))."""
        kind: str = event.kind
        node_id = event.node_id
        if kind == "node.started":
            self._active[node_id] = self._active.get(node_id, 0) + 1
            self.running += 1
            self._runs[node_id] = max(self._runs.get(node_id, 0), event.number)
            self._began[node_id] = event.time
            self._set(node_id, "running")
        elif kind in ("node.finished", "node.failed", "node.cancelled"):
            self._ended(node_id, kind[5:], event)
        elif kind == "node.retried":
            self.retried += 1
            self._set(node_id, "retrying")
        elif kind == "node.queued":
            if not self._active.get(node_id):
                self._set(node_id, "queued")
        elif kind == "graph.started":
            self.status = "running"
            if event.total:
                self.total = event.total

    def _ended(self, node_id: NodeId, state: str, event: Event) -> None:
        active = self._active.get(node_id, 0)
        if active:  # a node.cancelled after a node.failed of the same firing is not counted twice
            self._active[node_id] = active - 1
            self.running -= 1
        if state == "finished":
            self.finished += 1
            self.errors.pop(node_id, None)
        elif state == "failed":
            self.failed += 1
            self.errors[node_id] = one_line(event.error)
        elif event.error is not None:
            self.errors.setdefault(node_id, one_line(event.error))
        began = self._began.get(node_id)
        if began is not None:
            self._took[node_id] = event.time - began
        if not self._active.get(node_id):
            self._set(node_id, state)

    def _set(self, node_id: NodeId, state: str) -> None:
        old = self.states.get(node_id)
        if old == state:
            return
        if old is not None:
            self.by_state[old] -= 1
        self.states[node_id] = state
        self.by_state[state] = self.by_state.get(state, 0) + 1

    def end(self, error: BaseException | None) -> None:
        """The run is over, with ``error`` or without: settle the status and stop the clock."""
        self.ended_at = self.clock()
        for node_id, active in self._active.items():
            if active:
                self._set(node_id, "stopped")
                if node_id in self._began:
                    self._took[node_id] = self.ended_at - self._began[node_id]
        self._active.clear()
        self.running = 0
        for node_id in [node_id for node_id, state in self.states.items() if state in ("waiting", "queued")]:
            self._set(node_id, "not run")
        if error is None:
            self.status = (
                "finished with errors" if self.by_state["failed"] or self.by_state["cancelled"] else "finished"
            )
        elif isinstance(error, asyncio.CancelledError):
            self.status = "cancelled"
        elif isinstance(error, KeyboardInterrupt):
            self.status = "interrupted"
        elif isinstance(error, ExecutionTimeoutError):
            self.status = "timed out"
            self.run_error = one_line(error)
        else:
            self.status = "failed"
            if not isinstance(error, NodeError):  # a node's error is listed with its node
                self.run_error = one_line(error)

    @property
    def done(self) -> int:
        """How many nodes are done (finished, failed or cancelled) now."""
        return sum(self.by_state.get(state, 0) for state in _DONE)

    @property
    def elapsed(self) -> float:
        """Seconds since the run started, until it ended."""
        return (self.ended_at if self.ended_at is not None else self.clock()) - self.started_at

    def _counts(self) -> str:
        total = max(self.total, len(self.states))
        parts = [f"{self.done}/{total} nodes done", f"{self.running} running", f"{self.finished} finished"]
        parts.append(f"{self.failed} failed")
        if self.retried:
            parts.append(f"{self.retried} retried")
        if self.by_state["stopped"]:
            parts.append(f"{self.by_state['stopped']} stopped")
        if self.by_state["not run"]:
            parts.append(f"{self.by_state['not run']} not run")
        return ", ".join(parts)

    def __repr__(self) -> str:
        lines = [f"aioflow graph {self.graph_id!r}: {self.status}, {self._counts()} ({duration(self.elapsed)})"]
        if self.run_error:
            lines.append(f"  error: {self.run_error}")
        for node_id, error in list(self.errors.items())[:FAILED_SHOWN]:
            lines.append(f"  {self.states.get(node_id, 'failed')} {node_id!s}: {error}")
        if len(self.errors) > FAILED_SHOWN:
            lines.append(f"  ... and {len(self.errors) - FAILED_SHOWN} more")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """The display: a header, a progress bar, the counts, the failed nodes, and a row per node for small graphs."""
        total = max(self.total, len(self.states))
        status_colour = _STATUS_COLOURS.get(self.status, "#6b7280")
        root = (
            f'<div class="aioflow-run" data-graph="{_esc(self.graph_id)}" data-status="{_esc(self.status)}" '
            f'data-done="{self.done}" data-total="{total}" data-running="{self.running}" '
            f'data-finished="{self.finished}" data-failed="{self.failed}" '
            'style="font-family:var(--jp-ui-font-family,system-ui,sans-serif);font-size:13px;line-height:1.45;'
            'max-width:760px;padding:2px 0">'
        )
        badge = (
            f'<span style="color:#fff;background:{status_colour};border-radius:8px;padding:0 8px;font-size:12px">'
            f"{_esc(self.status)}</span>"
        )
        header = (
            '<div style="display:flex;gap:10px;align-items:baseline">'
            f"<strong>aioflow</strong><span>graph <code>{_esc(self.graph_id)}</code></span>{badge}"
            f'<span style="color:#6b7280">{duration(self.elapsed)}</span></div>'
        )
        out = [
            root,
            header,
            self._bar(total),
            f"<div>{_esc(self._counts())}</div>",
        ]
        if self.run_error:
            out.append(f'<div style="color:#dc2626">error: <code>{_esc(self.run_error)}</code></div>')
        if self.errors:
            out.append(self._failures())
        if len(self.states) <= NODE_TABLE_LIMIT:
            out.append(self._nodes())
        out.append("</div>")
        return "".join(out)

    def _bar(self, total: int) -> str:
        segments = []
        for state in ("finished", "failed", "cancelled", "running", "retrying"):
            count = self.by_state.get(state, 0)
            if count and total:
                width = 100.0 * count / total
                segments.append(
                    f'<div title="{count} {state}" style="width:{width:.2f}%;background:{_COLOURS[state]}"></div>'
                )
        return (
            f'<div title="{self.done} of {total} nodes done" style="display:flex;height:10px;margin:4px 0;'
            f'background:#e5e7eb;border-radius:5px;overflow:hidden">{"".join(segments)}</div>'
        )

    def _failures(self) -> str:
        """A line per failed node (`FAILED_SHOWN` at most): its id and its error's first line."""
        lines = [
            f"<div><code>{_esc(node_id)}</code> {_esc(self.states.get(node_id, 'failed'))}: "
            f"<code>{_esc(error)}</code></div>"
            for node_id, error in list(self.errors.items())[:FAILED_SHOWN]
        ]
        more = len(self.errors) - FAILED_SHOWN
        if more > 0:
            lines.append(f"<div>... and {more} more</div>")
        return f'<div class="aioflow-failed" style="margin-top:4px;color:#dc2626">{"".join(lines)}</div>'

    def _nodes(self) -> str:
        """A chip per node: its state, how many times it ran (when more than once), and how long its last run took."""
        chips = []
        now = self.clock()
        for node_id, state in self.states.items():
            details = [state]
            runs = self._runs.get(node_id, 0)
            if runs > 1:
                details.append(f"\u00d7{runs}")
            began = self._began.get(node_id)
            if state in ("running", "retrying") and began is not None:
                details.append(duration(now - began))
            elif node_id in self._took:
                details.append(duration(self._took[node_id]))
            chips.append(
                f'<span class="aioflow-node" data-node="{_esc(node_id)}" data-state="{_esc(state)}" '
                'style="border:1px solid #d1d5db;border-radius:4px;padding:0 6px;white-space:nowrap">'
                f'<span style="color:{_COLOURS.get(state, "#6b7280")}">\u25cf</span> <code>{_esc(node_id)}</code> '
                f'<span style="color:#6b7280">{_esc(_DOT.join(details))}</span></span>'
            )
        box = '<div class="aioflow-nodes" style="display:flex;flex-wrap:wrap;gap:4px;margin-top:6px;font-size:12px">'
        return f"{box}{''.join(chips)}</div>"


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


class NotebookDisplay(ExecutionHooks):
    """The execution hook that shows a run's `RunProgress` in the notebook, and updates it in place.

    One instance per run: it holds the run's progress and display handle.

    Args:
        clock: as `RunProgress`'s.
        interval: the least time between two updates (`UPDATE_INTERVAL`).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, interval: float = UPDATE_INTERVAL) -> None:
        self.progress = RunProgress(clock)
        self._interval = interval
        self._handle: Any = None
        self._timer: asyncio.TimerHandle | None = None
        self._changed = False
        self._sent_at = 0.0

    @contextlib.asynccontextmanager
    async def running(self, graph: Graph) -> AsyncIterator[None]:
        """Show the display, keep it up to date while the run goes on, and send its final state when it ends."""
        self.progress.begin(graph)
        self._show()
        loop = asyncio.get_running_loop()
        if self._handle is not None:
            self._timer = loop.call_later(self._interval, self._tick, loop)
        try:
            yield
        except BaseException as exc:
            self._close(exc)
            raise
        self._close(None)

    def observe(self, step: Step) -> None:
        self.progress.record(step.event)
        self._changed = True

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._changed or self.progress.clock() - self._sent_at >= CLOCK_REFRESH:
            self._update()
        if self._handle is not None:
            self._timer = loop.call_later(self._interval, self._tick, loop)

    def _close(self, error: BaseException | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.progress.end(error)
        self._update()

    def _show(self) -> None:
        try:
            from IPython import display as ipython_display

            show: Any = ipython_display.display  # untyped in IPython
            self._handle = show(self.progress, display_id=True)
        except Exception as exc:
            self._failed(exc)
        self._sent_at = self.progress.clock()

    def _update(self) -> None:
        if self._handle is None:
            return
        self._changed = False
        try:
            self._handle.update(self.progress)
        except Exception as exc:
            self._failed(exc)
        self._sent_at = self.progress.clock()

    def _failed(self, exc: Exception) -> None:
        self._handle = None
        warnings.warn(
            f"aioflow: the notebook display of the run stopped: {one_line(exc)}", RuntimeWarning, stacklevel=2
        )
