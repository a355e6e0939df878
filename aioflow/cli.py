"""The ``aioflow`` command line: run a graph and print its results, or check a graph.

::

    aioflow run GRAPH [-i NODE:NAME=VALUE ...] [options]   results as JSON on stdout
    aioflow check GRAPH [--json]                           a summary of the graph
    aioflow runs FILE [--json]                             the runs a journal holds
    aioflow resume FILE RUN_ID [--graph GRAPH]             continue a run of a journal
    aioflow plan GRAPH --journal FILE [--json]             what a cached run would run, reuse, and why
    aioflow why GRAPH NODE --journal FILE                  why a node would run (or be reused)
    aioflow show GRAPH [-o OUT]                            a picture of the graph (SVG, DOT, PNG, PDF)
    aioflow trace FILE RUN_ID [-o OUT]                     a run's timeline, for Perfetto or chrome://tracing
    aioflow ui FILE [--host HOST] [--port PORT]            a journal's runs in a web browser
    aioflow --version

`main` returns the exit code instead of exiting, so that it can be called from
Python (and from tests) as well as from the console script:

==== ==========================================================================
code meaning
==== ==========================================================================
0    success
1    a node failed, the execution timed out, a loop ran past ``--max-iterations``
     or a worker process was lost
2    the graph is invalid or cannot run, an option is invalid, an extra is
     missing, or the command line is wrong
130  interrupted (Ctrl-C, SIGINT), or cancelled from the live view (``--ui``); every
     worker was stopped first
143  terminated (SIGTERM); every worker was stopped first
==== ==========================================================================

When it runs as the program (the console script, ``python -m aioflow``:
`main` called without ``argv``), ``aioflow run`` owns its process and every
process below it (`_run_owning_the_process`):

- It adopts them (a subreaper, on Linux): a process a task daemonises (it
  forks twice, and its parent exits) is re-parented to this process instead
  of init, and stays below it.
- On its way out, in every outcome, it kills every process still below it
  (`kill_leftover_processes`), but the resource trackers, which clean up
  after it. The pools stop their own workers and what their tasks started,
  but a ``thread`` task's processes are children of this process, which only
  the program may kill: the library (`aioflow.execute_graph`, and `main`
  called with ``argv``) may run in a process with other children of its own
  (a Jupyter kernel's) and leaves them alone.
- SIGINT (Ctrl-C) and SIGTERM stop the run as Ctrl-C stops any execution
  (the execution is cancelled, the pools stop their workers), and the
  process exits within `STOP_DEADLINE` seconds: a ``thread`` task blocked in
  a C call, which nothing can stop, does not hold it up (`_Stop`). The exit
  code is 128 + the signal's number.

stdout carries nothing but the results; messages and the progress bar go to
stderr. rich is imported only when a progress bar is shown (stderr is a
terminal), so that ``import aioflow.cli`` stays cheap.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import threading
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Self

from ._api import execute_graph
from ._errors import (
    ExecutionError,
    GraphError,
    GraphvizError,
    GraphvizNotFoundError,
    JournalError,
    MissingExtraError,
    OptionError,
    PoolError,
)
from ._version import __version__
from .graph import load_graph
from .pools import available_pools
from .scheduler import preflight

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from ._results import Results
    from .events import Event
    from .graph import Graph, NodeId

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "STOP_DEADLINE",
    "kill_leftover_processes",
    "main",
]

#: Everything went well.
EXIT_OK = 0
#: The graph ran and something failed: a node, the timeout, the loop limit, a worker.
EXIT_FAILED = 1
#: Nothing ran: the graph, an option or the command line is wrong (argparse uses 2 too).
EXIT_USAGE = 2
#: Ctrl-C: 128 + SIGINT, what shells report for a process stopped by SIGINT.
EXIT_INTERRUPTED = 128 + signal.SIGINT
#: SIGTERM (``kill``, a batch system at the end of a job's time): 128 + SIGTERM.
EXIT_TERMINATED = 128 + signal.SIGTERM

#: Seconds after SIGINT or SIGTERM within which ``aioflow run``, in its own
#: process, has exited: the ordinary stop normally takes a fraction of it.
STOP_DEADLINE = 0.5

# Shows the terminal's cursor, which a progress bar hides while it runs.
_SHOW_CURSOR = "\x1b[?25h"

PROG = "aioflow"

# --outputs choice -> the ``outputs=`` argument of execute_graph (spec §6.6).
_OUTPUTS: dict[str, list[dict[str, Any]] | None] = {
    "end": None,  # the end nodes' outputs, the API's default
    "all": [{"all": True}],
    "none": [],
}

# An -i NODE that means "every node".
_ALL_NODES = "*"
# Node ids typed on the command line are text; these are tried as int ids too.
_INT_TEXT = re.compile(r"-?[0-9]+")

# The help of --trace: 'aioflow run' and 'aioflow resume' alike.
_TRACE_HELP = (
    "write the run's timeline to OUT when it ends, whatever the outcome, as a Chrome trace-event JSON file "
    "(one slice per firing, one track per worker process): open it in ui.perfetto.dev or chrome://tracing"
)


class _UsageError(Exception):
    """The command line is wrong (raised instead of argparse's exit)."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of exiting on a usage error."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise _UsageError(message)


# --------------------------------------------------------------------------- -i NODE:NAME=VALUE


def _object_arg(text: str, what: str) -> dict[str, Any]:
    """A JSON object given inline, or a JSON or YAML file holding one.

    Raises:
        argparse.ArgumentTypeError: neither, or the file cannot be read.
    """
    if text.lstrip().startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            msg = f"not a valid JSON object ({exc})"
            raise argparse.ArgumentTypeError(msg) from None
    else:
        try:
            content = Path(text).read_text(encoding="utf-8")
        except OSError as exc:
            msg = f"neither a JSON object nor a file that can be read ({exc.strerror or exc}: {text!r})"
            raise argparse.ArgumentTypeError(msg) from None
        try:
            value = json.loads(content)
        except json.JSONDecodeError:
            import yaml  # a YAML file: PyYAML is a dependency of aioflow's graph loading

            try:
                value = yaml.safe_load(content)
            except yaml.YAMLError as exc:
                msg = f"{text!r} is neither JSON nor YAML ({exc})"
                raise argparse.ArgumentTypeError(msg) from None
    if not isinstance(value, dict):
        msg = f"must be {what} (got a {type(value).__name__})"
        raise argparse.ArgumentTypeError(msg)
    return value


def node_defaults_arg(text: str) -> dict[str, Any]:
    """``--node-defaults``: a JSON object, or a JSON or YAML file holding one (checked by the run)."""
    return _object_arg(text, "an object like a node's 'aioflow' attribute")


def pool_config_arg(text: str) -> dict[str, Any]:
    """``--pool-config``: ``{"pools": {name: pool keywords}, "default_pool": name}``, inline or in a JSON or YAML file."""
    value = _object_arg(text, 'an object {"pools": {NAME: {"pool_type": ..., ...}}, "default_pool": NAME}')
    unknown = set(value) - {"pools", "default_pool"}
    if "pools" not in value or unknown:
        found = f"its keys are {', '.join(map(repr, value))}" if value else "it is empty"
        msg = f'must be an object {{"pools": {{NAME: {{"pool_type": ..., ...}}}}, "default_pool": NAME}} ({found})'
        raise argparse.ArgumentTypeError(msg)
    return value


@dataclass(frozen=True)
class InputArg:
    """One ``-i [NODE:]NAME=VALUE`` argument, before the graph is known.

    Attributes:
        node: the node id as typed; ``None`` for the start nodes, ``"*"`` for every node.
        name: the input name.
        value: the value, parsed as JSON when it is valid JSON, else the text as typed.
    """

    node: str | None
    name: str
    value: Any

    @classmethod
    def parse(cls, text: str) -> InputArg:
        """Parse ``[NODE:]NAME=VALUE``.

        ``=`` splits at its first occurrence (a value may contain ``=`` and
        ``:``); ``:`` splits the left part at its last occurrence (a node id
        may contain ``:``, an input name may not).

        Raises:
            argparse.ArgumentTypeError: no ``=``, or an empty name or node.
        """
        target, sep, raw_value = text.partition("=")
        if not sep:
            msg = f"expected [NODE:]NAME=VALUE (got {text!r}: no '=')"
            raise argparse.ArgumentTypeError(msg)
        node: str | None
        node, sep, name = target.rpartition(":")
        if not sep:
            node = None
        elif not node:
            msg = f"expected [NODE:]NAME=VALUE (got {text!r}: empty NODE before ':')"
            raise argparse.ArgumentTypeError(msg)
        if not name:
            msg = f"expected [NODE:]NAME=VALUE (got {text!r}: empty NAME)"
            raise argparse.ArgumentTypeError(msg)
        try:
            value = json.loads(raw_value)
        except ValueError:
            value = raw_value
        return cls(node=node, name=name, value=value)

    def to_input(self, graph: Graph) -> dict[str, Any]:
        """The ``inputs=`` item of `aioflow.execute_graph` for this argument on ``graph``."""
        item: dict[str, Any] = {"name": self.name, "value": self.value}
        if self.node == _ALL_NODES:
            item["all"] = True
        elif self.node is not None:
            item["id"] = resolve_node_id(graph, self.node)
        return item


def resolve_node_id(graph: Graph, text: str) -> NodeId:
    """The node id of ``graph`` that ``text`` names.

    Tried in order: the text itself; the int it spells (``"3"`` selects the
    node ``3``); a JSON list, the way JSON writes tuple ids (``'["sub", "a"]'``).
    An id that matches nothing is returned as typed, so that the loader
    reports it (with a suggestion).
    """
    if text in graph.nodes:
        return text
    if _INT_TEXT.fullmatch(text) and int(text) in graph.nodes:
        return int(text)
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except ValueError:
            return text
        as_tuple: NodeId = _to_tuple(parsed)
        if as_tuple in graph.nodes:
            return as_tuple
    return text


def _to_tuple(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_to_tuple(v) for v in value)
    return value


# --------------------------------------------------------------------------- output


def to_json(value: Any) -> str:
    """Results as JSON text: keys JSON cannot hold (tuple node ids) become JSON text.

    A tuple id ``("sub", "a")`` becomes the key ``'["sub", "a"]'``, the way
    graph files write it, and which ``-i`` accepts back. Values JSON cannot
    hold are written with ``repr``.
    """
    return json.dumps(_json_keys(value), indent=2, default=repr)


def _json_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {_json_key(k): _json_keys(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_keys(v) for v in value]
    return value


def _json_key(key: Any) -> Any:
    if key is None or isinstance(key, (str, int, float, bool)):
        return key
    if isinstance(key, tuple):
        return json.dumps(key, default=repr)
    return repr(key)


def _out(text: str) -> None:
    """Write a line to stdout (results only)."""
    sys.stdout.write(text + "\n")


def _err(text: str) -> None:
    """Write a line to stderr (messages)."""
    sys.stderr.write(text + "\n")


def _error(message: str) -> None:
    _err(f"{PROG}: error: {message}")


def _report(exc: BaseException, *, show_traceback: bool, known: bool = True) -> None:
    """Print ``exc`` to stderr: one line, or its full traceback."""
    if show_traceback:
        traceback.print_exception(exc, file=sys.stderr)
    elif known:
        _error(str(exc))
    else:
        _error(f"{type(exc).__name__}: {exc} (run with --traceback to see where)")


class _StderrHandler(logging.Handler):
    """Shows aioflow's log records as ``aioflow: warning: ...`` on the current ``sys.stderr``."""

    def emit(self, record: logging.LogRecord) -> None:
        # Like logging.StreamHandler: a failing handler reports itself and never raises.
        try:
            _err(f"{PROG}: {record.levelname.lower()}: {record.getMessage()}")
        except Exception:
            self.handleError(record)


@contextmanager
def _show_warnings() -> Iterator[None]:
    """Show aioflow's warnings on stderr, unless logging is already configured."""
    logger = logging.getLogger("aioflow")
    if logger.hasHandlers():
        yield
        return
    handler = _StderrHandler(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


# --------------------------------------------------------------------------- progress


class ProgressBar:
    """A rich progress bar on stderr, advanced by execution events.

    Use it as a context manager and pass it as ``on_event``. The bar counts
    node executions: it starts with the number of nodes as its total and
    grows the total when loops run nodes more than once.

    Attributes:
        completed: node executions that ended (finished or failed).
        failed: node executions that failed.
        total: the bar's total (``None`` until ``graph.started``).
    """

    def __init__(self, label: str) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.completed = 0
        self.failed = 0
        self.total: int | None = None
        # stdout is for results only: do not route it through the bar's console.
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=Console(stderr=True),
            redirect_stdout=False,
        )
        self._task = self._progress.add_task(label, total=None, status="")

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._progress.stop()

    def __call__(self, event: Event) -> None:
        """Advance the bar for one event."""
        if event.kind == "graph.started":
            self.total = event.total
        elif event.kind in ("node.finished", "node.failed", "node.cancelled"):
            self.completed += 1
            self.failed += event.kind != "node.finished"
            if self.total is not None and self.completed > self.total:
                self.total = self.completed  # a loop ran some node again
        else:
            return
        status = f"[red]{self.failed} failed" if self.failed else ""
        self._progress.update(self._task, completed=self.completed, total=self.total, status=status)


def _stderr_is_terminal() -> bool:
    stream = sys.stderr
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


@contextmanager
def _progress(label: str) -> Iterator[Callable[[Event], None] | None]:
    """Yield a progress bar's event callback when stderr is a terminal, else ``None``."""
    if not _stderr_is_terminal():
        yield None
        return
    with ProgressBar(label) as bar:
        yield bar


# --------------------------------------------------------------------------- commands


def _prepend_cwd() -> None:
    """Put the current directory first on ``sys.path``, as ``python -m`` does."""
    cwd = os.getcwd()
    if not sys.path or sys.path[0] != cwd:
        sys.path.insert(0, cwd)


def _graph_source(path: str, root_dir: str | None) -> str:
    """The GRAPH argument for `load_graph`.

    The loader resolves relative paths against ``root_dir``; a file named on
    the command line relative to the current directory is made absolute so
    that ``--root-dir`` affects only the paths inside the graph. A path found
    only under ``--root-dir`` is left for the loader.
    """
    if root_dir is None or os.path.isabs(path):
        return path
    if any(os.path.isfile(path + suffix) for suffix in ("", ".json", ".yml", ".yaml")):
        return os.path.abspath(path)
    return path


def _load(args: argparse.Namespace) -> Graph:
    return load_graph(_graph_source(args.graph, args.root_dir), root_dir=args.root_dir)


def _cmd_run(args: argparse.Namespace) -> int:
    _prepend_cwd()
    resume = getattr(args, "resume", None)  # aioflow resume
    if resume is not None and args.graph is None:
        from .journal import stored_graph

        graph = stored_graph(args.journal, resume)
    else:
        graph = _load(args)
    options: dict[str, Any] = {
        "inputs": [arg.to_input(graph) for arg in args.inputs],
        "outputs": _OUTPUTS[args.outputs],
        "merge_outputs": args.merge_outputs,
        "raise_on_error": args.raise_on_error,
        "timeout": args.timeout,
        "pool_type": args.pool,
        "max_workers": args.max_workers,
        "context": args.context,
        **({} if args.idle_timeout is None else {"idle_timeout": args.idle_timeout}),
        "max_iterations": args.max_iterations,
        "node_defaults": getattr(args, "node_defaults", None),
        **(getattr(args, "pool_config", None) or {}),
    }
    if args.trace is not None:
        from .observe._trace import check_trace_path

        options["trace"] = check_trace_path(args.trace, "--trace")
        _err(f"{PROG}: the run's timeline goes to {args.trace} when it ends")
    if args.journal is not None:
        from .journal import JournalRun

        options["journal"] = run = JournalRun(args.journal, resume=resume, cache=args.cache)
        resuming = f", resuming {resume}" if resume is not None else ""
        _err(f"{PROG}: run {run.run_id} recorded in {args.journal}{resuming}")
    ui_options = (getattr(args, f"ui_{name}", None) for name in ("host", "port", "token"))
    if getattr(args, "ui", False) or any(value is not None for value in ui_options):
        return _run_with_view(args, graph, options)
    with _progress(graph.label) as on_event:
        results: Results = execute_graph(graph, uvloop=False if args.no_uvloop else None, on_event=on_event, **options)
    return _results_out(args, graph, results)


def _results_out(args: argparse.Namespace, graph: Graph, results: Results) -> int:
    """Print the results of ``aioflow run`` on stdout, name the nodes that failed; the exit code."""
    _out(to_json(results))
    if not results.errors:
        return EXIT_OK
    if args.traceback:
        for error in results.errors.values():
            traceback.print_exception(error, file=sys.stderr)
    failed = ", ".join(repr(nid) for nid in results.errors)
    count = len(results.errors)
    _error(f"graph {graph.id!r}: {count} node{'s' if count > 1 else ''} failed: {failed}")
    return EXIT_FAILED


def _cmd_plan(args: argparse.Namespace) -> int:
    """``aioflow plan`` and ``aioflow why``."""
    from .journal import plan

    _prepend_cwd()
    graph = _load(args)
    result = plan(graph, args.journal, inputs=[arg.to_input(graph) for arg in args.inputs])
    entries = [*result.firings, *result.not_reached]
    node = getattr(args, "node", None)
    if node is not None:
        if node not in graph.nodes:
            _error(f"graph {graph.id!r} has no node {node!r}")
            return EXIT_USAGE
        entries = result.for_node(node)
    if args.json:
        _out(json.dumps([f._asdict() for f in entries], indent=2, default=str))
        return EXIT_OK
    rows = [
        (f.action if f.action in ("run", "reuse") else "?", _node_name(f.node_id, f.execution), f.reason)
        for f in entries
    ]
    width = max((len(row[1]) for row in rows), default=0)
    for action, name, reason in rows:
        _out(f"{action:<6} {name:<{width}}  {reason}")
    if node is None:
        runs = sum(f.action == "run" for f in result.firings)
        reused = len(result.firings) - runs
        _err(f"{PROG}: {runs} to run, {reused} reused, {len(result.not_reached)} not reached")
    return EXIT_OK


def _node_name(node_id: Any, execution: int) -> str:
    from .journal._plan import node_name

    name = node_name(node_id)
    return f"{name} #{execution}" if execution > 1 else name


def _cmd_trace(args: argparse.Namespace) -> int:
    """``aioflow trace``: a run of a journal as a Chrome trace-event file."""
    from .observe._trace import check_trace_path, trace_from_journal, trace_json, write_trace

    output = args.output
    if output is None:
        output = re.sub(r"[^A-Za-z0-9._-]", "_", args.run_id) + ".trace.json"
    if output != "-":
        check_trace_path(output, "--output")  # before reading the journal
    trace = trace_from_journal(args.journal, args.run_id)
    if output == "-":
        sys.stdout.write(trace_json(trace))
        return EXIT_OK
    write_trace(trace, output)
    _err(f"{PROG}: timeline of run {args.run_id} written to {output}")
    return EXIT_OK


def _run_with_view(args: argparse.Namespace, graph: Graph, options: dict[str, Any]) -> int:
    """``aioflow run --ui``: the run, followed in a web page whose Cancel button cancels it.

    The run goes through `aioflow.start`, whose handle the page's Cancel
    button calls; a run cancelled so exits with `EXIT_INTERRUPTED`, as after
    Ctrl-C. Once the run is over and the page shows how it ended: with stderr
    a terminal, the page is served until Ctrl-C (the exit code stays the
    run's); otherwise the server stops at once.
    """
    import asyncio

    from ._handle import start
    from .observe._ui import require_extra

    require_extra("aioflow run --ui")
    from .observe._ui import LiveView

    with LiveView(graph, host=args.ui_host or "127.0.0.1", port=args.ui_port or 0, token=args.ui_token) as view:
        _err(f"{PROG}: live view at {view.url}")
        try:
            with _progress(graph.label) as on_event:
                results: Results = view.run(start, graph, on_event=on_event, **options)
            code = _results_out(args, graph, results)
        except asyncio.CancelledError:
            _err(f"{PROG}: the run was cancelled from the live view")
            code = EXIT_INTERRUPTED
        except (ExecutionError, PoolError) as exc:
            _report(exc, show_traceback=args.traceback)
            code = EXIT_FAILED
        if _stderr_is_terminal():
            _err(f"{PROG}: the run is over; the live view stays at {view.url} until Ctrl-C")
            view.wait_until_interrupted()
    return code


def _cmd_ui(args: argparse.Namespace) -> int:
    """``aioflow ui``: the runs of a journal in a web browser, served until Ctrl-C."""
    import time

    from .observe._ui import require_extra

    require_extra("aioflow ui")
    from .observe._ui import JournalSite, ViewServer

    site = JournalSite(args.journal)
    with ViewServer(site, host=args.host, port=args.port, token=args.token) as server:
        _err(f"{PROG}: the runs of {args.journal} at {server.url} (Ctrl-C to stop)")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return EXIT_OK


def _cmd_runs(args: argparse.Namespace) -> int:
    import time

    from .journal import list_runs

    runs = list_runs(args.journal)
    if args.json:
        _out(json.dumps([run._asdict() for run in runs], indent=2))
        return EXIT_OK
    header = ("RUN", "GRAPH", "STARTED", "STATE", "DONE", "FAILED", "UNENDED", "REUSED")
    rows = [
        (
            run.run_id, run.graph_id, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.started)), run.state,
            str(run.finished), str(run.failed), str(run.started_firings), str(run.reused),
        )
        for run in runs
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        _out("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return EXIT_OK


def summarize(graph: Graph) -> dict[str, Any]:
    """What ``aioflow check`` reports about a valid graph, as JSON-ready data."""
    return {
        "id": graph.id,
        "label": graph.label,
        "nodes": len(graph.nodes),
        "links": len(graph.links),
        "start_nodes": list(graph.start_nodes),
        "end_nodes": list(graph.end_nodes),
        "cycles": [list(cycle) for cycle in graph.cycles],
    }


def _ids(ids: Sequence[Any]) -> str:
    return ", ".join(repr(n) for n in ids) or "none"


def _summary_text(graph: Graph, problems: Sequence[str]) -> str:
    state = "valid" if not problems else "INVALID"
    label = f" ({graph.label})" if graph.label != graph.id else ""
    lines = [
        f"graph {graph.id!r}{label}: {state}",
        f"  nodes:       {len(graph.nodes)}",
        f"  links:       {len(graph.links)}",
        f"  start nodes: {_ids(graph.start_nodes)}",
        f"  end nodes:   {_ids(graph.end_nodes)}",
    ]
    if graph.cycles:
        count = len(graph.cycles)
        lines.append(f"  cycles:      {count} (each runs as a loop)")
        lines.extend(f"    - {_ids(cycle)}" for cycle in graph.cycles)
    else:
        lines.append("  cycles:      none")
    return "\n".join(lines)


def _cmd_check(args: argparse.Namespace) -> int:
    try:
        graph = _load(args)
    except GraphError as exc:
        if args.json:
            doc = {"id": exc.graph_id, "valid": False, "problems": list(exc.problems)}
            _out(json.dumps(doc, indent=2, default=repr))
        _error(str(exc))
        return EXIT_USAGE
    problems: list[str] = []
    message = ""
    try:
        preflight(graph)
    except GraphError as exc:
        problems, message = list(exc.problems), str(exc)
    except MissingExtraError as exc:
        problems, message = [str(exc)], str(exc)
    if args.json:
        doc = {**summarize(graph), "valid": not problems, "problems": problems}
        _out(json.dumps(doc, indent=2, default=repr))
    else:
        _out(_summary_text(graph, problems))
    if problems:
        _error(message)
        return EXIT_USAGE
    return EXIT_OK


# The formats of 'aioflow show', by the suffix of the file written.
_SHOW_SUFFIXES = {".svg": "svg", ".dot": "dot", ".gv": "dot", ".png": "png", ".pdf": "pdf"}


def _cmd_show(args: argparse.Namespace) -> int:
    """``aioflow show``: a picture of the graph, drawn by Graphviz's ``dot``."""
    from .graph._draw import draw

    output: str | None = args.output
    fmt: str | None = args.format
    if output is None:
        output = Path(args.graph).stem + "." + (fmt or "svg")
    elif output == "-":
        fmt = fmt or "svg"
    if fmt is None:
        fmt = _SHOW_SUFFIXES.get(Path(output).suffix.lower())
        if fmt is None:
            suffixes = ", ".join(_SHOW_SUFFIXES)
            _error(f"cannot tell the format of {output!r} from its suffix: use {suffixes}, or --format")
            return EXIT_USAGE
    if output != "-" and not Path(output).resolve().parent.is_dir():
        _error(f"cannot write {output!r}: its directory does not exist")
        return EXIT_USAGE
    graph = _load(args)
    try:
        picture = draw(graph, fmt)
    except GraphvizNotFoundError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except GraphvizError as exc:
        _error(str(exc))
        return EXIT_FAILED
    if output == "-":
        if fmt in ("svg", "dot"):
            sys.stdout.write(picture.decode("utf-8"))
        else:
            sys.stdout.flush()
            sys.stdout.buffer.write(picture)
            sys.stdout.buffer.flush()
        return EXIT_OK
    try:
        Path(output).write_bytes(picture)
    except OSError as exc:
        _error(f"cannot write {output!r}: {exc.strerror or exc}")
        return EXIT_USAGE
    _err(f"{PROG}: picture of graph {graph.id!r} written to {output}")
    return EXIT_OK


# --------------------------------------------------------------------------- owning the process


def kill_leftover_processes() -> None:
    """SIGKILL every process descending from this one, but the resource trackers.

    Every tree is listed before anything is killed. Only for a process that
    owns all its children: ``aioflow run``'s.
    """
    from .pools._lifecycle import kill_descendants

    kill_descendants()


def _kill_leftovers_quietly() -> None:
    """`kill_leftover_processes`, which never fails the exit."""
    try:
        kill_leftover_processes()
    except Exception as exc:
        _error(f"could not stop the processes left by the tasks: {type(exc).__name__}: {exc}")


class _Stop:
    """SIGINT and SIGTERM in ``aioflow run``'s own process.

    The first signal raises KeyboardInterrupt in the main thread while the
    run runs, which stops it the way Ctrl-C stops any execution: the
    execution is cancelled, the pools stop their workers, multiprocessing
    cleans up. It also sets an alarm: if the process has not exited
    `STOP_DEADLINE` seconds later (a ``thread`` task blocked in a C call,
    which nothing can stop, holds the stop up; or a thread the interpreter
    waits for at exit), `exit_now` kills every process below it and ends it.
    The alarm is a signal, not a thread: its handler runs in the main thread
    wherever that waits (the event loop, a join, gevent's hub), and nothing
    runs beside the main path. Later signals change nothing: the stop is
    under way, and bounded.

    Attributes:
        signum: the first signal received, or ``None``.
        interruptible: whether that signal raises KeyboardInterrupt; cleared
            once the run is over, so that nothing cuts the killing of the
            leftover processes short.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.interruptible = True
        self._said = False
        self._pid = os.getpid()
        self._previous: dict[int, Any] = {}

    @contextmanager
    def handling_signals(self) -> Iterator[None]:
        """Handle SIGINT and SIGTERM; restore the previous handlers after, unless one came.

        Only the main thread can. A signal ignored when the process started
        stays ignored, as Python leaves it: a shell starts a background job
        with SIGINT ignored, so that Ctrl-C stops only the foreground one.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = [signum for signum in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(signum) != signal.SIG_IGN]
        self._previous = {signum: signal.signal(signum, self._on_signal) for signum in handled}
        try:
            yield
        finally:
            if self.signum is None:  # else the process is on its way out: a second Ctrl-C must not cut it short
                self._restore()

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: object) -> None:
        if os.getpid() != self._pid:
            # A process forked from this one (a worker of the fork start
            # method, a task's fork) is not the command: it gets its
            # handlers back, then the signal again.
            self._restore()
            signal.raise_signal(signum)
            return
        if self.signum is not None:
            return
        self.signum = signum
        signal.signal(signal.SIGALRM, self.exit_now)
        signal.setitimer(signal.ITIMER_REAL, STOP_DEADLINE)
        if self.interruptible:
            raise KeyboardInterrupt

    @property
    def exit_code(self) -> int:
        """`EXIT_TERMINATED` after SIGTERM, else `EXIT_INTERRUPTED`."""
        return EXIT_TERMINATED if self.signum == signal.SIGTERM else EXIT_INTERRUPTED

    def say(self) -> None:
        """Say on stderr why the command stopped, unless it was said."""
        if not self._said:
            _err(f"{PROG}: terminated" if self.signum == signal.SIGTERM else f"{PROG}: interrupted")
            self._said = True

    def exit_now(self, signum: int, frame: object) -> NoReturn:
        """The alarm's handler: kill every process below this one, say why, flush, and end at once."""
        _kill_leftovers_quietly()
        self.say()
        if _stderr_is_terminal():
            sys.stderr.write(_SHOW_CURSOR)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: S110 - a closed stream, or one the interrupted main path was writing to
                pass
        os._exit(self.exit_code)


def _run_owning_the_process(args: argparse.Namespace) -> int:
    """``aioflow run`` in its own process: no process it started outlives it, and a signal ends it at once.

    Returns:
        The exit code, when no signal came.

    Raises:
        SystemExit: after SIGINT or SIGTERM, with `EXIT_INTERRUPTED` or
            `EXIT_TERMINATED`: the process exits, within `STOP_DEADLINE`
            seconds of the signal.
    """
    from .pools._lifecycle import set_subreaper

    stop = _Stop()
    adopting = set_subreaper(True)
    try:
        with stop.handling_signals():
            try:
                code = _run_command(args)
            except KeyboardInterrupt:  # a signal, or raised by a task
                code = EXIT_INTERRUPTED
            stop.interruptible = False
            _kill_leftovers_quietly()
    finally:
        if adopting is False:
            set_subreaper(False)
    if stop.signum is not None:
        stop.say()
        raise SystemExit(stop.exit_code)
    if code == EXIT_INTERRUPTED:
        stop.say()
    return code


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``aioflow`` command."""
    parser = _Parser(prog=PROG, description="Execute and check Ewoks workflow graphs.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    run = commands.add_parser(
        "run",
        help="execute a graph and print its results as JSON",
        description=(
            "Execute a graph and print its results as JSON on stdout. Messages, and a progress "
            "bar when stderr is a terminal, go to stderr. The current directory is put first on "
            "sys.path (as 'python -m' does), so task modules next to the graph import by name. "
            "Exit codes: 0 success, 1 a node failed (or timeout, loop limit, lost worker), "
            "2 invalid graph or option, 130 interrupted."
        ),
    )
    run.add_argument("graph", metavar="GRAPH", help="graph file (JSON or YAML; the suffix may be left out)")
    run.add_argument(
        "-i",
        "--input",
        dest="inputs",
        metavar="[NODE:]NAME=VALUE",
        type=InputArg.parse,
        action="append",
        default=[],
        help=(
            "an input for node NODE (an int-looking NODE also matches an int id, a JSON list a "
            "subgraph node); without NODE: the start nodes; NODE '*': every node. VALUE is read "
            "as JSON when it is valid JSON (42, true, [1, 2], '\"text\"'), else taken as a string. "
            "Repeatable."
        ),
    )
    run.add_argument("--pool", choices=available_pools(), help="pool type (default: process)")
    run.add_argument("--max-workers", type=int, metavar="N", help="the most tasks that run at once")
    run.add_argument("--context", choices=("spawn", "fork", "forkserver"), help="start method of the process pool")
    run.add_argument(
        "--idle-timeout", type=float, metavar="SECONDS", help="retire a worker idle for this long (default: 60)"
    )
    run.add_argument("--timeout", type=float, metavar="SECONDS", help="stop the running tasks and fail after this long")
    run.add_argument(
        "--outputs",
        choices=tuple(_OUTPUTS),
        default="end",
        help="whose outputs to print: the end nodes (default), all nodes, or none",
    )
    run.add_argument(
        "--no-merge-outputs",
        dest="merge_outputs",
        action="store_false",
        help="print {node id: outputs} instead of one merged dict",
    )
    run.add_argument(
        "--raise-on-error",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=(
            "stop at the first node that fails (default); with --no-raise-on-error, run every branch "
            "that can run, print the results, and exit 1 if a node failed"
        ),
    )
    run.add_argument("--max-iterations", type=int, metavar="N", help="the most times any node may run (loops)")
    run.add_argument(
        "--node-defaults",
        type=node_defaults_arg,
        metavar="JSON|FILE",
        help=(
            "per-node settings for every node that does not set them in its 'aioflow' attribute, "
            'as a JSON object or a JSON/YAML file: e.g. \'{"timeout": 60, "retries": 2}\' '
            "(keys: timeout, retries, retry_delay, retry_on, priority)"
        ),
    )
    run.add_argument(
        "--pool-config",
        type=pool_config_arg,
        metavar="JSON|FILE",
        help=(
            "several pools in one run, for the nodes whose 'aioflow' attribute names one: "
            '{"pools": {"cpu": {"pool_type": "process", "max_workers": 8}, "io": {"pool_type": "thread"}}, '
            '"default_pool": "cpu"} as JSON or in a JSON/YAML file (without default_pool, the other nodes run '
            "on --pool)"
        ),
    )
    run.add_argument(
        "--no-uvloop", action="store_true", help="use asyncio's own event loop even if uvloop is installed"
    )
    run.add_argument("--traceback", action="store_true", help="print full tracebacks instead of one-line errors")
    run.add_argument(
        "--root-dir", metavar="DIR", help="directory against which relative paths in the graph are resolved"
    )
    run.add_argument(
        "--journal",
        metavar="FILE",
        help="record the run, every firing and its outputs, in this SQLite file (created if missing); "
        "its run id is printed on stderr",
    )
    run.add_argument(
        "--cache",
        action="store_true",
        help="with --journal: take a firing's outputs from the journal when an earlier run with --cache ran "
        "the same task (its code included) on the same inputs (see 'aioflow plan')",
    )
    run.add_argument("--trace", metavar="OUT", help=_TRACE_HELP)
    run.add_argument(
        "--ui",
        action="store_true",
        help="follow the run in a web browser: its graph, each node coloured by its state, and a Cancel button "
        "(needs aioflow[ui]); the page's address is printed on stderr",
    )
    run.add_argument(
        "--ui-host",
        metavar="HOST",
        help="the address the live view listens on (implies --ui; default: 127.0.0.1, this machine only; "
        "on any other, the page needs a token)",
    )
    run.add_argument("--ui-port", type=int, metavar="PORT", help="its port (implies --ui; default: any free port)")
    run.add_argument(
        "--ui-token",
        metavar="TOKEN",
        help="the token the page needs (implies --ui; default: none on a loopback address, a random one otherwise)",
    )
    run.set_defaults(handler=_cmd_run)

    resume = commands.add_parser(
        "resume",
        help="continue a run of a journal, without running again what it finished",
        description=(
            "Run again the graph of run RUN_ID of the journal FILE, as a new run recorded in FILE: "
            "every firing the run finished (same node, same execution number, same inputs) is "
            "taken from the journal instead of run. The graph is the one the journal kept; "
            "--graph runs another file of the same graph (nodes and links) instead. Prints the "
            "results as JSON, as 'aioflow run' does, with the same exit codes."
        ),
    )
    resume.add_argument("journal", metavar="FILE", help="the journal file")
    resume.add_argument("resume", metavar="RUN_ID", help="the run to continue")
    resume.add_argument("--graph", metavar="GRAPH", help="the graph file to run (default: the graph the journal kept)")
    resume.add_argument("--pool", choices=available_pools(), help="pool type (default: process)")
    resume.add_argument("--max-workers", type=int, metavar="N", help="the most tasks that run at once")
    resume.add_argument("--traceback", action="store_true", help="print full tracebacks instead of one-line errors")
    resume.add_argument("--trace", metavar="OUT", help=_TRACE_HELP)
    resume.set_defaults(
        handler=_cmd_run, inputs=[], outputs="end", merge_outputs=True, raise_on_error=True, timeout=None,
        context=None, idle_timeout=None, max_iterations=None, no_uvloop=False, root_dir=None, cache=False,
    )  # fmt: skip

    for name in ("plan", "why"):
        explain = commands.add_parser(
            name,
            help=(
                "what a run with --cache would run and reuse, and why (no task runs)"
                if name == "plan"
                else "why a node would run, or be reused, in a run with --cache (no task runs)"
            ),
            description=(
                "Go through the graph as 'aioflow run GRAPH --journal FILE --cache' would, without running "
                "a task: each firing the journal's cache has (same task, code included, same inputs) is "
                "reused, and any other would run; say why for each (no earlier result, the code of the task "
                "changed, which input changed, its inputs come from a node that runs). Nodes behind a "
                "condition on what a running node produces are listed as not reached. "
                "Exit codes: 0 planned, 2 the graph is invalid or the file is not a journal."
            ),
        )
        explain.add_argument("graph", metavar="GRAPH", help="graph file (JSON or YAML; the suffix may be left out)")
        if name == "why":
            explain.add_argument("node", metavar="NODE", help="the node's id")
        explain.add_argument("--journal", metavar="FILE", required=True, help="the journal whose cache is used")
        explain.add_argument(
            "-i",
            "--input",
            dest="inputs",
            action="append",
            default=[],
            type=InputArg.parse,
            metavar="[NODE:]NAME=VALUE",
            help="an input, as for 'aioflow run'",
        )
        explain.add_argument("--json", action="store_true", help="print the plan as JSON")
        explain.add_argument(
            "--root-dir", metavar="DIR", help="directory against which relative paths in the graph are resolved"
        )
        explain.set_defaults(handler=_cmd_plan)

    timeline = commands.add_parser(
        "trace",
        help="write the timeline of a run of a journal, for Perfetto or chrome://tracing",
        description=(
            "Write the timeline of run RUN_ID of the journal FILE as a Chrome trace-event JSON file: one slice "
            "per firing, one track per worker process (open it in ui.perfetto.dev, or chrome://tracing). The "
            "path written is printed on stderr. Exit codes: 0 written, 2 the file is not a journal, it has no "
            "such run, or OUT cannot be written."
        ),
    )
    timeline.add_argument("journal", metavar="FILE", help="the journal file")
    timeline.add_argument("run_id", metavar="RUN_ID", help="the run ('aioflow runs FILE' lists them)")
    timeline.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="the file to write (default: RUN_ID.trace.json in the current directory; '-': stdout)",
    )
    timeline.set_defaults(handler=_cmd_trace)

    web = commands.add_parser(
        "ui",
        help="look at a journal's runs in a web browser",
        description=(
            "Serve the runs a journal holds (aioflow run --journal FILE) as web pages: a list of its runs, and for "
            "each its graph, every node coloured by the state of its firings; a run still running in another "
            "process is followed as the file changes. The address is printed on stderr. Serves until Ctrl-C "
            "(needs aioflow[ui]). Exit codes: 0 stopped, 2 the file is not a journal, the address cannot be "
            "used, or the extra is missing."
        ),
    )
    web.add_argument("journal", metavar="FILE", help="the journal file")
    web.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to listen on (default: 127.0.0.1, this machine only; on any other, the page needs a token)",
    )
    web.add_argument("--port", type=int, default=0, help="the port (default: any free port)")
    web.add_argument(
        "--token", help="the token the page needs (default: none on a loopback address, a random one otherwise)"
    )
    web.set_defaults(handler=_cmd_ui)

    runs = commands.add_parser(
        "runs",
        help="list the runs a journal holds",
        description=(
            "List the runs recorded in a journal (aioflow run --journal FILE): id, graph, start, "
            "state, and how many firings finished, failed, or were started and never ended. "
            "Exit codes: 0 listed, 2 the file is not a journal."
        ),
    )
    runs.add_argument("journal", metavar="FILE", help="the journal file")
    runs.add_argument("--json", action="store_true", help="print the runs as JSON")
    runs.set_defaults(handler=_cmd_runs)

    check = commands.add_parser(
        "check",
        help="load and validate a graph, and summarize it",
        description=(
            "Load and validate a graph, check that it can run (start nodes, cycles that can fire), "
            "and print a summary. Exit codes: 0 valid, 2 invalid (every problem is listed on stderr)."
        ),
    )
    check.add_argument("graph", metavar="GRAPH", help="graph file (JSON or YAML; the suffix may be left out)")
    check.add_argument("--json", action="store_true", help="print the summary as JSON")
    check.add_argument(
        "--root-dir", metavar="DIR", help="directory against which relative paths in the graph are resolved"
    )
    check.set_defaults(handler=_cmd_check)

    show = commands.add_parser(
        "show",
        help="draw a graph: SVG, DOT, PNG or PDF",
        description=(
            "Draw a graph with Graphviz's dot program (a system package: apt install graphviz, conda install "
            "graphviz, brew install graphviz; the environment variable AIOFLOW_DOT names another dot): a box per "
            "node, an arrow per link, a box around the nodes of each subgraph. The format is taken from the "
            "suffix of OUT (.svg, .dot, .png, .pdf), or --format; .dot is the DOT text and needs no Graphviz. "
            "The path written is printed on stderr. Exit codes: 0 written, 2 invalid graph, unknown format, "
            "OUT cannot be written or dot is missing, 1 dot failed."
        ),
    )
    show.add_argument("graph", metavar="GRAPH", help="graph file (JSON or YAML; the suffix may be left out)")
    show.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="the file to write (default: the graph file's name with .svg, in the current directory; '-': stdout)",
    )
    show.add_argument(
        "--format", choices=("svg", "dot", "png", "pdf"), help="the format, whatever the suffix of OUT (default: svg)"
    )
    show.add_argument(
        "--root-dir", metavar="DIR", help="directory against which relative paths in the graph are resolved"
    )
    show.set_defaults(handler=_cmd_show)
    return parser


def main(argv: list[str] | None = None, *, own_process: bool | None = None) -> int:
    """Run the ``aioflow`` command.

    Args:
        argv: the arguments, without the program name (default: ``sys.argv[1:]``).
        own_process: whether this process is the command's own, so that
            ``run`` adopts every process below it, kills those still there
            when it ends, and ends the process on SIGINT or SIGTERM (see the
            module docstring; default: when ``argv`` is not given, as for the
            console script and ``python -m aioflow``).

    Returns:
        The exit code: `EXIT_OK`, `EXIT_FAILED`, `EXIT_USAGE` or `EXIT_INTERRUPTED`.

    Raises:
        SystemExit: ``run`` in its own process, after SIGINT or SIGTERM.
    """
    if own_process is None:
        own_process = argv is None
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    if own_process and args.command == "run":
        return _run_owning_the_process(args)
    try:
        return _run_command(args)
    except KeyboardInterrupt:
        _err(f"{PROG}: interrupted")
        return EXIT_INTERRUPTED


def _run_command(args: argparse.Namespace) -> int:
    """Run the command; report a failure on stderr and return its exit code. KeyboardInterrupt propagates."""
    show_traceback = getattr(args, "traceback", False)
    try:
        with _show_warnings():
            code: int = args.handler(args)
    except (GraphError, OptionError, MissingExtraError, JournalError) as exc:
        _report(exc, show_traceback=show_traceback)
        return EXIT_USAGE
    except (ExecutionError, PoolError) as exc:
        _report(exc, show_traceback=show_traceback)
        return EXIT_FAILED
    # Anything else is a bug, in a task's callback or in aioflow: report it, do not lose it.
    except Exception as exc:
        _report(exc, show_traceback=show_traceback, known=False)
        return EXIT_FAILED
    return code
