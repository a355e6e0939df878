"""Task functions for the graphs of ``test_ppf_semantics.py``. Importable by name from every worker."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable


def ppf_inc(value: int = 0, **_: Any) -> dict[str, Any]:
    """ppfmethod: ``value + 1``."""
    return {"value": value + 1}


def ppf_inc_ab(a: int = 0, b: int = 0, **_: Any) -> dict[str, Any]:
    """ppfmethod: increments ``a`` and ``b`` (1 when missing or 0)."""
    return {"a": a + 1, "b": b + 1}


def ppf_check(value: int, limit: int = 10, **_: Any) -> dict[str, Any]:
    """ppfmethod: a loop condition, as strings."""
    return {"doContinue": "true" if value < limit else "false"}


def single(**kwargs: Any) -> Any:
    """The one input this task was given (it fails on more or fewer)."""
    if len(kwargs) != 1:
        msg = f"expected one input, got {sorted(kwargs)}"
        raise ValueError(msg)
    return next(iter(kwargs.values()))


def greater_than(a: int, limit: int = 10) -> bool:
    return a > limit


def must_be_greater(a: int, limit: int = 10) -> bool:
    if not a > limit:
        msg = f"{a} is not greater than {limit}"
        raise ValueError(msg)
    return True


def _tracker(name: str) -> Callable[..., dict[str, Any]]:
    def track(succeeded: tuple[str, ...] = (), raise_on_names: tuple[str, ...] = (), **_: Any) -> dict[str, Any]:
        """ppfmethod: appends its name to ``succeeded``, or fails when named in ``raise_on_names``."""
        if name in raise_on_names:
            msg = f"raise on name: {name}"
            raise RuntimeError(msg)
        return {"succeeded": (*succeeded, name)}

    track.__name__ = track.__qualname__ = name
    return track


task1 = _tracker("task1")
task2 = _tracker("task2")
task3 = _tracker("task3")
subtask1 = _tracker("subtask1")
subtask2 = _tracker("subtask2")
subtask3 = _tracker("subtask3")
subsubtask1 = _tracker("subsubtask1")
subsubtask2 = _tracker("subsubtask2")
subsubtask3 = _tracker("subsubtask3")
subsub_handler = _tracker("subsub_handler")
