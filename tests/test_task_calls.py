"""What the scheduler sends to workers, and what comes back, crosses a pickle whole."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from aioflow._tasks import ChainedCall, TaskCall, TaskOutcome


def _distinct(cls: type) -> Any:
    """An instance of ``cls`` whose every field holds a value of its own, so that a dropped field shows."""
    return cls(*({"field": name, "n": i} for i, name in enumerate(cls._fields)))  # type: ignore[attr-defined]


@pytest.mark.parametrize("cls", [TaskCall, TaskOutcome, ChainedCall])
@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL])
def test_every_field_survives_a_pickle(cls: type, protocol: int) -> None:
    value = _distinct(cls)
    copy = pickle.loads(pickle.dumps(value, protocol=protocol))
    assert type(copy) is cls
    assert copy == value
    for name in cls._fields:
        assert getattr(copy, name) == getattr(value, name)


def test_a_chained_call_keeps_its_call_and_parts() -> None:
    call = TaskCall("n", "label", "method", "tasks.inc", {"x": 1}, {"varinfo": None}, None, {"x": "token"})
    chained = ChainedCall(call, ({"y": 2}, (0, True, (("a", "b"),))))
    copy = pickle.loads(pickle.dumps(chained, protocol=pickle.HIGHEST_PROTOCOL))
    assert copy == chained
    assert copy.call.input_tags == {"x": "token"}
    assert copy.parts[1] == (0, True, (("a", "b"),))
