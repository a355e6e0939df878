"""Task functions of the property tests: deterministic, sensitive to every input they get.

Each function turns its inputs into a canonical, picklable form (`canonical`)
and derives its result from a stable digest of it, so two engines that call a
task with different inputs (another merge order, a missing value, one firing
more or less) almost surely return different results.

The counter ``n`` a task returns is ``1 + the largest int among its inputs``
plus a small digest-dependent step: it grows along every chain of firings, so
a loop closed by a condition ``n == v`` passes that condition at most once per
chain and ends.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

from aioflow import MISSING

__all__ = [
    "IDENTITY_KEYS",
    "NodeFailure",
    "always_fail",
    "canonical",
    "digest",
    "node",
    "pick",
    "ppf_increment",
    "ppf_node",
    "ppf_route",
]

#: Inputs that configure a task rather than carry data: never counted in ``n``.
IDENTITY_KEYS = ("me", "fail_at")

#: A task with a ``fail_at`` input fails when ``n % FAIL_MODULUS == fail_at``.
FAIL_MODULUS = 4


class NodeFailure(ValueError):
    """The failure a task raises on purpose."""


def canonical(value: Any) -> Any:
    """A comparable, engine-independent form of a value.

    Exceptions become ``("error", type name, message)``; the
    ``WorkflowException`` dict of an ``on_error`` link keeps only its message
    (tracebacks differ between engines); mappings become sorted tuples.
    """
    if value is MISSING:
        return "<MISSING>"
    if isinstance(value, BaseException):
        return ("error", type(value).__name__, str(value))
    if isinstance(value, Mapping):
        if set(value) == {"errorMessage", "traceBack"}:
            return ("WorkflowException", value["errorMessage"])
        return tuple(sorted(((repr(k), canonical(v)) for k, v in value.items()), key=lambda kv: kv[0]))
    if isinstance(value, (list, tuple)):
        return tuple(canonical(v) for v in value)
    return value


def digest(value: Any) -> int:
    """A stable (process-independent) hash of a canonical value."""
    return int.from_bytes(hashlib.sha256(repr(value).encode()).digest()[:8], "big")


def _ints(value: Any) -> Iterator[int]:
    """Every int inside a value, skipping configuration keys and bools."""
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        yield value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            if k not in IDENTITY_KEYS:
                yield from _ints(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _ints(v)


def _counter(me: Any, data: Any) -> int:
    return 1 + max(_ints(data), default=0) + digest((me, canonical(data))) % 3


def _maybe_fail(me: Any, fail_at: Any, n: int) -> None:
    if fail_at is not None and n % FAIL_MODULUS == fail_at:
        msg = f"node {me} fails with n={n}"
        raise NodeFailure(msg)


def node(*args: Any, me: Any = None, fail_at: Any = None, **kwargs: Any) -> int:
    """A ``method`` task: return the counter ``n`` of its inputs (see the module docstring).

    Args:
        args: positional inputs (gaps arrive as `aioflow.MISSING`).
        me: the node's own number (a default input).
        fail_at: fail when ``n % FAIL_MODULUS == fail_at``.
        kwargs: every other input.
    """
    n = _counter(me, {"args": list(args), "kwargs": kwargs})
    _maybe_fail(me, fail_at, n)
    return n


def ppf_node(me: Any = None, fail_at: Any = None, **kwargs: Any) -> dict[str, Any]:
    """A ``ppfmethod`` task: set ``v`` to the counter of its inputs.

    The incoming ``_ppfdict`` overrides the node's own inputs (spec §5.3), so
    ``me`` may be an upstream node's number: still deterministic.
    """
    n = _counter(me, kwargs)
    _maybe_fail(me, fail_at, n)
    return {"v": n}


def ppf_increment(value: int = 0, **_: Any) -> dict[str, Any]:
    """A ``ppfmethod`` task: ``value + 1``."""
    return {"value": value + 1}


def ppf_route(d: Any = None, **_: Any) -> dict[str, Any]:
    """A ``ppfmethod`` task: pass ``d`` on, for routing by conditions."""
    return {"d": d}


def pick(return_value: Any = None, **_: Any) -> Any:
    """A ``method`` task: return its ``return_value`` input (what ``map_all_data`` from a method passes)."""
    return return_value


def always_fail(**kwargs: Any) -> None:
    """A ``method`` task that always fails."""
    msg = f"failed on purpose with inputs {sorted(map(str, kwargs))}"
    raise NodeFailure(msg)
