"""The task-kind registry: one `TaskKind` per ``task_type``, all the engine knows of each kind.

The scheduler, the state machine and the workers ask a node's kind here,
never compare ``task_type`` with a name. A record says:

- how a worker runs the kind (`TaskKind.runner`, a ``"module:function"``
  path resolved in the worker on first use, so this layer never imports
  the plug-in that implements a kind: ewokscore's kinds point into
  `aioflow.ewoks._worker`, imported only by a worker that runs one);
- which output the link conditions read (`TaskKind.conditions_on`: the ppf
  kinds keep their data in ``_ppfdict``);
- which optional extra it needs (`TaskKind.extra`, checked before anything
  runs);
- whether its outputs may come with tokens that only the scheduler carries
  (`TaskKind.tokens`), which keeps its nodes out of the calls a chaining
  pool runs ahead;
- which execution hooks a run of a graph that has such a node needs
  (`TaskKind.hooks`, a ``"module:class"`` path the engine resolves and
  instantiates, unless the run already has hooks of that class: the Ewoks
  plug-in's, for ewokscore's kinds).

The paths are resolved by `resolve`, once per process.
"""

from __future__ import annotations

import importlib
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["KINDS", "Extra", "TaskKind", "resolve", "task_kind"]


class Extra(NamedTuple):
    """An optional extra: ``pip install 'aioflow[name]'`` installs ``package``, whose absence means it is missing."""

    name: str
    package: str


class TaskKind(NamedTuple):
    """What the engine and the workers need to know of one ``task_type``.

    Attributes:
        task_type: the name nodes give in ``task_type``.
        runner: ``"module:function"``: the function a worker calls with the
            node's `aioflow._tasks.TaskCall`; it returns the outputs, a dict
            (or a `aioflow._tasks.TaskOutcome`: outputs with tokens).
        conditions_on: the output whose value (a dict) the conditions of
            the node's out-links are checked against, in place of the
            outputs themselves; ``None``: the outputs.
        extra: the optional extra the kind needs; ``None``: none.
        tokens: the runner may return outputs with tokens (`TaskOutcome`),
            which only the scheduler carries from call to call.
        hooks: ``"module:class"``: the `aioflow.scheduler.ExecutionHooks` a
            run needs when its graph has a node of this kind (built with no
            arguments); ``None``: none.
    """

    task_type: str
    runner: str
    conditions_on: str | None = None
    extra: Extra | None = None
    tokens: bool = False
    hooks: str | None = None


def _ewokscore_kind(task_type: str) -> TaskKind:
    """A kind that ewokscore's task classes run, in the worker, through the Ewoks plug-in."""
    return TaskKind(
        task_type,
        "aioflow.ewoks._worker:run_ewoks_task",
        extra=Extra("ewoks", "ewokscore"),
        tokens=True,
        hooks="aioflow.ewoks._hooks:EwoksTasks",
    )


#: ``task_type`` -> its kind: every kind this version can run.
KINDS: Mapping[str, TaskKind] = MappingProxyType(
    {
        kind.task_type: kind
        for kind in (
            TaskKind("method", "aioflow._tasks:run_method"),
            TaskKind("ppfmethod", "aioflow._tasks:run_ppfmethod", conditions_on="_ppfdict"),
            TaskKind("ppfport", "aioflow._tasks:run_ppfport", conditions_on="_ppfdict"),
            TaskKind("script", "aioflow._tasks:run_script"),
            _ewokscore_kind("class"),
            _ewokscore_kind("generated"),
            _ewokscore_kind("notebook"),
        )
    }
)


def task_kind(task_type: str) -> TaskKind:
    """The kind registered under ``task_type``.

    Raises:
        ValueError: no kind has that name.
    """
    try:
        return KINDS[task_type]
    except KeyError:
        msg = f"task_type {task_type!r} cannot run in a worker"
        raise ValueError(msg) from None


_RESOLVED: dict[str, Any] = {}


def resolve(path: str) -> Any:
    """The object a ``"module:attribute"`` path names, importing the module on first use (then cached)."""
    found = _RESOLVED.get(path)
    if found is None:
        module, _, attribute = path.partition(":")
        found = _RESOLVED[path] = getattr(importlib.import_module(module), attribute)
    return found
