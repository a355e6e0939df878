"""Per-node control: the ``"aioflow"`` attribute of a node (timeout, retries, priority, pool), checked and read.

A node may carry, under the one key ``"aioflow"`` (which other Ewoks
engines ignore)::

    {"id": "fit", ..., "aioflow": {"timeout": 30, "retries": 2, "retry_delay": [1, 5],
                                   "retry_on": ["OSError"], "priority": 5, "pool": "cpu"}}

- ``timeout``: seconds (a number > 0) one attempt of the node's task may
  run; past it the attempt fails with `aioflow.NodeTimeoutError`.
- ``retries``: how many times a failed attempt is run again (an int >= 0).
- ``retry_delay``: seconds before each retry: a number (every retry), a
  list (the n-th retry waits the n-th entry, the last one repeats), or an
  exponential policy ``{"initial": 1, "factor": 2, "max": 60, "jitter": 0.5}``
  (retry n waits ``min(max, initial * factor ** (n - 1))`` plus a random
  part of at most ``jitter`` seconds). Default 0.
- ``retry_on``: the exceptions that are retried, by import path
  (``"OSError"``, ``"requests.exceptions.ConnectionError"``,
  ``"mymodule:MyError"``): a failure is retried when it is an instance of
  one of them. Not given: every failure of the task is retried but a
  timeout; a timeout is retried only when ``retry_on`` names
  ``TimeoutError`` (or ``aioflow.NodeTimeoutError``).
- ``priority``: an int; among the firings ready to be sent, higher first
  (default 0; equal priorities keep the order of the graph).
- ``pool``: the name of one of the execution's pools (``pools=``).

The same object, given as ``node_defaults=`` to an execution, holds the
values of the nodes that do not set them.

This module checks the attribute when a graph loads (`check_control`,
problems reported with the node named) and reads it for a run
(`node_controls`). It imports nothing from aioflow but the base.
"""

from __future__ import annotations

import math
import random
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .._errors import GraphError

if TYPE_CHECKING:
    from ._model import Graph, NodeId

__all__ = ["CONTROL_KEY", "NO_CONTROL", "NodeControl", "RetryDelay", "check_control", "node_controls"]

#: The node attribute that holds a node's control settings.
CONTROL_KEY = "aioflow"

_KEYS = ("timeout", "retries", "retry_delay", "retry_on", "priority", "pool")
_POLICY_KEYS = ("initial", "factor", "max", "jitter")

# Bounds that keep a hostile document from asking for the absurd.
_MAX_RETRIES = 10_000
_MAX_DELAYS = 1_000


@dataclass(frozen=True, slots=True)
class RetryDelay:
    """How long to wait before each retry.

    Attributes:
        delays: fixed delays, the n-th retry waiting the n-th (the last one
            repeats); used when ``factor`` is ``None``.
        initial, factor, max, jitter: the exponential policy: retry n waits
            ``min(max, initial * factor ** (n - 1))`` plus a uniform random
            part in ``[0, jitter]``.
    """

    delays: tuple[float, ...] = (0.0,)
    initial: float = 0.0
    factor: float | None = None
    max: float = math.inf
    jitter: float = 0.0

    def before(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        if self.factor is None:
            return self.delays[min(retry, len(self.delays)) - 1]
        base = min(self.max, self.initial * self.factor ** min(retry - 1, 1024))
        return base + (random.uniform(0.0, self.jitter) if self.jitter else 0.0)


@dataclass(frozen=True, slots=True)
class NodeControl:
    """One node's control settings, as a run applies them (see the module docstring).

    ``retry_on`` holds import paths; the driver resolves them when the run starts.
    """

    timeout: float | None = None
    retries: int = 0
    retry_delay: RetryDelay = RetryDelay()
    retry_on: tuple[str, ...] | None = None
    priority: int = 0
    pool: str | None = None


#: The settings of a node that sets none.
NO_CONTROL = NodeControl()


def check_control(value: Any) -> list[str]:
    """The problems of a node's ``"aioflow"`` value (or of ``node_defaults``), each a sentence; none when it is valid."""
    if not isinstance(value, Mapping):
        return [f"must be an object with keys among {', '.join(_KEYS)} (got a {type(value).__name__})"]
    problems = [f"has an unknown key {key!r} (known: {', '.join(_KEYS)})" for key in value if key not in _KEYS]
    if "timeout" in value and value["timeout"] is not None and not _positive(value["timeout"]):
        problems.append(f"'timeout' must be a number of seconds > 0 (got {_show(value['timeout'])})")
    if "retries" in value and not (_int(value["retries"]) and 0 <= value["retries"] <= _MAX_RETRIES):
        problems.append(f"'retries' must be an int from 0 to {_MAX_RETRIES} (got {_show(value['retries'])})")
    if "retry_delay" in value:
        problems += _delay_problems(value["retry_delay"])
    if "retry_on" in value:
        problems += _retry_on_problems(value["retry_on"])
    if "priority" in value and not _int(value["priority"]):
        problems.append(f"'priority' must be an int (got {_show(value['priority'])})")
    if "pool" in value and value["pool"] is not None and not (isinstance(value["pool"], str) and value["pool"]):
        problems.append(f"'pool' must be the name of one of the execution's pools (got {_show(value['pool'])})")
    return problems


def _delay_problems(value: Any) -> list[str]:
    if _non_negative(value):
        return []
    if isinstance(value, list):
        if not value or len(value) > _MAX_DELAYS or not all(map(_non_negative, value)):
            return [
                f"'retry_delay' as a list must hold 1 to {_MAX_DELAYS} numbers of seconds >= 0 (got {_show(value)})"
            ]
        return []
    if isinstance(value, Mapping):
        problems = [
            f"'retry_delay' has an unknown key {k!r} (known: {', '.join(_POLICY_KEYS)})"
            for k in value
            if k not in _POLICY_KEYS
        ]
        problems += [
            f"'retry_delay': {key!r} must be a number of seconds >= 0 (got {_show(value[key])})"
            for key in ("initial", "max", "jitter")
            if key in value and not _non_negative(value[key])
        ]
        if "factor" in value and not (_number(value["factor"]) and 1 <= value["factor"] <= 1000):
            problems.append(f"'retry_delay': 'factor' must be a number from 1 to 1000 (got {_show(value['factor'])})")
        return problems
    expected = f"seconds (a number >= 0), a list of them, or an object with keys among {', '.join(_POLICY_KEYS)}"
    return [f"'retry_delay' must be {expected} (got {_show(value)})"]


def _retry_on_problems(value: Any) -> list[str]:
    names = [value] if isinstance(value, str) else value
    if names is None:
        return []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return [f"'retry_on' must be an exception's import path or a list of them (got {_show(value)})"]
    return [
        f"'retry_on': {n!r} is not an import path (write 'OSError', 'package.module.Error' or 'package.module:Error')"
        for n in names
        if not _import_path(n)
    ]


def _import_path(name: str) -> bool:
    module, _, attr = name.rpartition(":") if ":" in name else ("", "", name)
    parts = [*(module.split(".") if module else ()), *attr.split(".")]
    return all(p.isidentifier() for p in parts)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value: Any) -> bool:
    return _number(value) and value > 0


def _non_negative(value: Any) -> bool:
    return _number(value) and value >= 0


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _read(value: Mapping[str, Any], base: NodeControl) -> NodeControl:
    """``base`` with the settings of a checked ``"aioflow"`` value."""
    changes: dict[str, Any] = {}
    if "timeout" in value:
        changes["timeout"] = None if value["timeout"] is None else float(value["timeout"])
    if "retries" in value:
        changes["retries"] = value["retries"]
    if "retry_delay" in value:
        delay = value["retry_delay"]
        if isinstance(delay, Mapping):
            changes["retry_delay"] = RetryDelay(
                initial=float(delay.get("initial", 1.0)),
                factor=float(delay.get("factor", 2.0)),
                max=float(delay.get("max", math.inf)),
                jitter=float(delay.get("jitter", 0.0)),
            )
        else:
            delays = delay if isinstance(delay, list) else [delay]
            changes["retry_delay"] = RetryDelay(delays=tuple(map(float, delays)))
    if "retry_on" in value:
        names = value["retry_on"]
        changes["retry_on"] = None if names is None else tuple([names] if isinstance(names, str) else names)
    if "priority" in value:
        changes["priority"] = value["priority"]
    if "pool" in value:
        changes["pool"] = value["pool"]
    return replace(base, **changes) if changes else base


def node_controls(graph: Graph, defaults: Mapping[str, Any] | None = None) -> Mapping[NodeId, NodeControl]:
    """The control settings of ``graph``'s nodes that have any (their own over ``defaults``); checked values only.

    A node absent from the result has `NO_CONTROL`. ``defaults`` must have
    passed `check_control`; so must the nodes' values, which `load_graph`
    checks (a graph made by hand is checked here). Without ``defaults``, the
    result is kept with the graph (which never changes) for its next runs:
    it must not be changed.

    Raises:
        GraphError: a node's value has problems (each named).
    """
    if defaults:
        return _controls(graph, _read(defaults, NO_CONTROL))
    controls = _KEPT.get(graph)
    if controls is None:
        controls = _KEPT[graph] = _controls(graph, NO_CONTROL)
    return controls


# Each graph's settings without defaults, read once (a graph never changes).
_KEPT: weakref.WeakKeyDictionary[Graph, dict[NodeId, NodeControl]] = weakref.WeakKeyDictionary()


def _controls(graph: Graph, base: NodeControl) -> dict[NodeId, NodeControl]:
    controls: dict[NodeId, NodeControl] = {}
    for nid, node in graph.nodes.items():
        attributes = node.attributes
        if not attributes or CONTROL_KEY not in attributes:
            if base is not NO_CONTROL:
                controls[nid] = base
            continue
        value = attributes[CONTROL_KEY]
        problems = check_control(value)
        if problems:
            raise GraphError(graph.id, [f"node {nid!r}: {CONTROL_KEY!r}: {p}" for p in problems])
        control = _read(value, base)
        if control != NO_CONTROL:
            controls[nid] = control
    return controls
