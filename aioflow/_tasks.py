"""What runs inside a worker: one node's task, from a small picklable `TaskCall`.

Nothing here knows about graphs or the scheduler. A `TaskCall` names the
task (``task_type`` + ``task_identifier``) and carries the merged inputs;
`run_task` calls the runner of its kind (`aioflow._kinds`), or the runner
the call names, and returns the node's outputs as a dict. The runners of
aioflow's own kinds are here:

- `run_method`: ``func(*positional, **named)``; output ``return_value`` (spec §5.2);
- `run_ppfmethod` / `run_ppfport`: the ``_ppfdict`` convention (spec §5.3);
- `run_script`: a subprocess; outputs ``return_code``, ``out``, ``err`` (spec §5.4).

The others are elsewhere, named by path and imported by the worker on first
use: ewokscore's kinds (``class``, ``generated``, ``notebook``) run in
`aioflow.ewoks._worker`, so a worker that runs plain methods never imports
ewokscore.

Imported callables are cached per worker, so a warm worker imports a task
module once.
"""

from __future__ import annotations

import contextvars
import importlib
import importlib.util
import inspect
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from ._errors import TaskInputError
from ._kinds import resolve, task_kind
from ._results import MISSING

__all__ = [
    "ChainedCall",
    "TaskCall",
    "TaskOutcome",
    "current_attempt",
    "import_callable",
    "link_data",
    "run_chained",
    "run_method",
    "run_ppfmethod",
    "run_ppfport",
    "run_script",
    "run_task",
]

# A script that runs longer than this is checked for interruption this often
# (a thread-pool task can only be interrupted between Python bytecodes).
_SCRIPT_WAIT_SLICE = 0.2


# The records that cross to the workers are named tuples: they pickle by
# position (no field lookups per call), and defining one costs an import a
# seventh of a frozen dataclass's.


class TaskCall(NamedTuple):
    """Everything a worker needs to run one node once.

    Attributes:
        node_id: the node.
        label: the node's label (for messages).
        task_type: the node's ``task_type``.
        task_identifier: what to run.
        inputs: the merged inputs (default inputs under link data).
        context: what the execution's hooks give the node's calls for their
            runner (`aioflow.scheduler.CallContext.data`: for the Ewoks
            plug-in, the node's other attributes and the execution's
            ``varinfo``, ``execinfo``, ``task_options``); ``None``: nothing.
        runner: ``"module:function"`` that runs the call in place of its
            kind's runner (`aioflow.scheduler.CallContext.runner`); ``None``:
            the kind's.
        input_tags: input name -> the token of the upstream output the input's
            value came from (see `TaskOutcome`); ``None`` when no input has one.
        attempt: which attempt of the firing this is: 1, then 2... as the
            node's ``retries`` run it again (`current_attempt`).
    """

    node_id: Any
    label: str
    task_type: str
    task_identifier: Any
    inputs: dict[Any, Any]
    context: Any = None
    runner: str | None = None
    input_tags: Mapping[Any, Any] | None = None
    attempt: int = 1

    @property
    def call_name(self) -> Any:
        """What a pool names the call after (a Dask key's prefix): the task it runs, ``task_identifier``."""
        return self.task_identifier


class TaskOutcome(NamedTuple):
    """A task's outputs with a token per output, for the tasks that have them.

    A token is what a downstream task needs to know about where an input came
    from, beyond its value: for tasks run by ewokscore, the identity (and,
    when saved, the location) of the output, so that the downstream task's
    own outputs are identified, and saved, as ewokscore identifies them. The
    scheduler passes tokens along with the values without reading them.
    `run_task` returns a plain dict when no output has a token.
    """

    outputs: dict[Any, Any]
    tags: dict[Any, Any]


def run_task(call: TaskCall) -> dict[Any, Any] | TaskOutcome:
    """Run one task with its runner (the call's, else its kind's); return its outputs.

    Any exception is the task's failure.
    """
    runner: Callable[[TaskCall], dict[Any, Any] | TaskOutcome] = resolve(
        call.runner or task_kind(call.task_type).runner
    )
    if call.attempt == 1:
        return runner(call)
    token = _ATTEMPT.set(call.attempt)
    try:
        return runner(call)
    finally:
        _ATTEMPT.reset(token)


# The attempt of the task running in this thread (`current_attempt`): set for retries only.
_ATTEMPT: contextvars.ContextVar[int] = contextvars.ContextVar("aioflow_attempt", default=1)


def current_attempt() -> int:
    """Which attempt of its node's firing the calling task is: 1, then 2, 3... as the node's ``retries`` run it again.

    Read in a task, on any pool (the attempt travels with the call); 1
    outside a task.
    """
    return _ATTEMPT.get()


def link_data(
    outputs: Mapping[Any, Any], map_all_data: bool, data_mapping: tuple[tuple[Any, Any], ...]
) -> dict[Any, Any]:
    """The data one link delivers from its source's outputs (spec §3.2).

    Every output under its own name with ``map_all_data``, then each
    ``(source_output, target_input)`` pair of ``data_mapping``; an output the
    source did not produce arrives as `MISSING`. The scheduler and the
    workers that run a `ChainedCall` both build link data with this function,
    so a node sees the same inputs whichever side built them.
    """
    data: dict[Any, Any] = dict(outputs) if map_all_data else {}
    for source_output, target_input in data_mapping:
        data[target_input] = outputs.get(source_output, MISSING)
    return data


class ChainedCall(NamedTuple):
    """A `TaskCall` whose link inputs come from calls that have not finished when it is sent.

    A pool that chains calls (`aioflow.pools.Pool.chains_calls`) runs it
    after those calls, on a worker, with their outputs as arguments: the
    data goes from worker to worker, and the call starts without waiting for
    a round trip through the scheduler.

    Attributes:
        call: the call, its ``inputs`` holding the node's default inputs only.
        parts: one entry per in-link of the node, in link order (the order in
            which the scheduler merges link data): the link's data when it is
            already known, or ``(upstream, map_all_data, data_mapping)`` to
            build it from the outputs of the ``upstream``-th argument of
            `run_chained` after the call.
    """

    call: TaskCall
    parts: tuple[dict[Any, Any] | tuple[int, bool, tuple[tuple[Any, Any], ...]], ...]

    @property
    def call_name(self) -> Any:
        """What a pool names the call after: that of its `TaskCall`."""
        return self.call.task_identifier


def run_chained(chained: ChainedCall, *upstream: dict[Any, Any]) -> dict[Any, Any] | TaskOutcome:
    """Run a `ChainedCall`, given the outputs of the calls it waited for."""
    dynamic: dict[Any, Any] = {}
    for part in chained.parts:
        if isinstance(part, dict):
            dynamic.update(part)
        else:
            index, map_all_data, data_mapping = part
            dynamic.update(link_data(upstream[index], map_all_data, data_mapping))
    call = chained.call
    defaults = call.inputs
    inputs = {**defaults, **dynamic} if defaults else dynamic
    return run_task(
        TaskCall(call.node_id, call.label, call.task_type, call.task_identifier, inputs, call.context, call.runner)
    )


# --------------------------------------------------------------------------- imports

_CALLABLES: dict[str, Callable[..., Any]] = {}


def import_callable(identifier: str) -> Callable[..., Any]:
    """Import ``"pkg.mod.func"``, ``"pkg.mod.Class.method"`` or ``"/path/file.py::func"``.

    Raises:
        ImportError: with the identifier and what could not be found.
    """
    cached = _CALLABLES.get(identifier)
    if cached is not None:
        return cached
    if "::" in identifier:
        path, _, qualname = identifier.partition("::")
        obj: Any = _import_file(path)
    else:
        obj, qualname = _import_longest_module(identifier)
    for part in qualname.split(".") if qualname else ():
        try:
            obj = getattr(obj, part)
        except AttributeError:
            msg = f"cannot import {identifier!r}: {getattr(obj, '__name__', obj)!r} has no attribute {part!r}"
            if getattr(obj, "__name__", None) == "__main__":
                msg += (
                    " (a function defined in __main__ or a notebook exists only in the interpreter that"
                    " defined it: use the thread pool, or move it to an importable module)"
                )
            raise ImportError(msg) from None
    if not callable(obj):
        msg = f"{identifier!r} is not callable (it is a {type(obj).__name__})"
        raise ImportError(msg)
    func: Callable[..., Any] = obj
    _CALLABLES[identifier] = func
    return func


def _import_longest_module(identifier: str) -> tuple[Any, str]:
    parts = identifier.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # Only "this prefix does not exist" means: try a shorter one. A
            # missing import *inside* the task module is the real error.
            if (
                exc.name
                and module_name.startswith(exc.name)
                and (exc.name == module_name or module_name.startswith(exc.name + "."))
            ):
                continue
            raise
        return module, ".".join(parts[cut:])
    msg = f"cannot import {identifier!r}: no module named {parts[0]!r}"
    raise ImportError(msg)


#: Held while a task file is imported: a module is in ``sys.modules`` before
#: its code has run, so a second thread must not take it from there until
#: the first has finished (it would find the module without its functions).
#: Reentrant: a task file may import another one while it runs.
_FILE_IMPORT_LOCK = threading.RLock()


def _import_file(path: str) -> Any:
    resolved = Path(path).resolve()
    if not resolved.is_file():
        msg = f"cannot import from {path!r}: no such file"
        raise ImportError(msg)
    import hashlib  # here, as shlex below: only a task file or script needs them

    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:12]
    name = f"aioflow_task_file_{resolved.stem}_{digest}"
    with _FILE_IMPORT_LOCK:
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.spec_from_file_location(name, resolved)
            if spec is None or spec.loader is None:
                msg = f"cannot import from {path!r}: not a Python file"
                raise ImportError(msg)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[name]
                raise
    return module


# --------------------------------------------------------------------------- method


def _split_inputs(inputs: Mapping[Any, Any]) -> tuple[list[Any], dict[str, Any]]:
    """Positional inputs in index order (gaps are MISSING) and non-missing named inputs."""
    positions = sorted(k for k in inputs if isinstance(k, int))
    args: list[Any] = []
    if positions:
        args = [MISSING] * (positions[-1] + 1)
        for k in positions:
            args[k] = inputs[k]
    kwargs = {k: v for k, v in inputs.items() if isinstance(k, str) and v is not MISSING}
    return args, kwargs


def run_method(call: TaskCall) -> dict[Any, Any]:
    """``method``: the function ``task_identifier`` names, called with the inputs; output ``return_value``."""
    func = import_callable(call.task_identifier)
    args, kwargs = _split_inputs(call.inputs)
    try:
        result = func(*args, **kwargs)
    except TypeError as exc:
        _raise_if_bad_call(call, func, args, kwargs, exc)
        raise
    return {"return_value": result}


def _raise_if_bad_call(
    call: TaskCall, func: Callable[..., Any], args: list[Any], kwargs: dict[str, Any], exc: TypeError
) -> None:
    """Turn a TypeError raised by the call itself (not by the task) into a TaskInputError."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as bind_error:
        missing = [
            name
            for i, (name, p) in enumerate(signature.parameters.items())
            if p.default is inspect.Parameter.empty
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            and name not in kwargs
            and not (p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and i < len(args))
        ]
        if missing:
            names = ", ".join(repr(m) for m in missing)
            detail = f"missing the required input(s) {names}"
        else:
            detail = f"cannot take its inputs ({bind_error}); check the links' target_input names"
        raise TaskInputError(call.label, detail, missing) from exc


# --------------------------------------------------------------------------- ppf


def _ppf_arguments(inputs: Mapping[Any, Any]) -> dict[Any, Any]:
    kwargs = {k: v for k, v in inputs.items() if v is not MISSING and k != "_method"}
    incoming = kwargs.pop("_ppfdict", None)
    if incoming:
        kwargs.update(incoming)
    return kwargs


def run_ppfmethod(call: TaskCall) -> dict[Any, Any]:
    """``ppfmethod``: the function called with the ``_ppfdict`` spread; output ``_ppfdict``, its result merged in."""
    func = import_callable(call.task_identifier)
    kwargs = _ppf_arguments(call.inputs)
    try:
        result = func(**kwargs)
    except TypeError as exc:
        _raise_if_bad_call(call, func, [], kwargs, exc)
        raise
    if not isinstance(result, Mapping):
        msg = f"ppfmethod {call.task_identifier!r} must return a dict (got {type(result).__name__})"
        raise TypeError(msg)
    return {"_ppfdict": {**kwargs, **result}}


def run_ppfport(call: TaskCall) -> dict[Any, Any]:
    """``ppfport``: passes its inputs on, the ``_ppfdict`` spread, as output ``_ppfdict``."""
    return {"_ppfdict": _ppf_arguments(call.inputs)}


# --------------------------------------------------------------------------- script


def _script_command(identifier: str, inputs: Mapping[Any, Any]) -> list[str]:
    path = Path(identifier)
    if path.is_file():
        with path.open("rb") as f:
            has_shebang = f.read(2) == b"#!"
        if has_shebang:
            command = [str(path.resolve())]
        elif path.suffix == ".py":
            command = [sys.executable, str(path)]
        else:
            command = ["bash", str(path)]
    else:
        import shlex

        command = shlex.split(identifier) if identifier.strip() else []
        if not command:
            msg = "script task has an empty command"
            raise ValueError(msg)
    for name, value in inputs.items():
        if not isinstance(name, str) or name.startswith("_") or value is MISSING:
            continue
        flag = f"-{name}" if len(name) == 1 else f"--{name}"
        command.append(flag)
        if value != "":
            command.append(str(value))
    positional = sorted(k for k in inputs if isinstance(k, int) and inputs[k] is not MISSING)
    command.extend(str(inputs[k]) for k in positional)
    return command


def run_script(call: TaskCall) -> dict[Any, Any]:
    """``script``: a subprocess; outputs ``return_code``, ``out``, ``err``."""
    inputs = call.inputs
    capture = bool(inputs.get("_capture_output", False))
    merge_err = bool(inputs.get("_merge_err", False))
    raise_on_error = bool(inputs.get("_raise_on_error", False))
    command = _script_command(str(call.task_identifier), inputs)
    stdout = subprocess.PIPE if capture else None
    stderr = (subprocess.STDOUT if merge_err else subprocess.PIPE) if capture else None
    proc = subprocess.Popen(command, stdout=stdout, stderr=stderr, text=True, env=os.environ.copy())
    try:
        while True:
            try:
                out, err = proc.communicate(timeout=_SCRIPT_WAIT_SLICE)
                break
            except subprocess.TimeoutExpired:
                continue
    finally:
        if proc.poll() is None:  # interrupted: the script must not outlive its task
            proc.kill()
            proc.wait()
    if raise_on_error and proc.returncode != 0:
        detail = f": {err.strip()[-500:]}" if err else ""
        msg = f"script {' '.join(command)!r} exited with code {proc.returncode}{detail}"
        raise RuntimeError(msg)
    return {"return_code": proc.returncode, "out": out, "err": err}
