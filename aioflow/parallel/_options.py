"""What maps and backends accept: worker counts, chunk sizes, ``if_serial``, and the errors that refuse the rest.

A count (``max_workers``, ``chunksize``) is any integer type, numpy's
included (`numbers.Integral`), and reaches the workers as an `int`; a bool, a
float or numpy's bool is refused as a type. The messages use scinexus's words
(``max_workers (0) must be greater than 0``, ``max_workers must be an int or
None, got True``), since code written for ``scinexus.parallel`` matches on
them; the errors are aioflow's `OptionError` (a `ValueError`), and also a
`TypeError` for a value of the wrong type, as scinexus raises.
"""

from __future__ import annotations

import numbers

from .._errors import AioflowError, OptionError

__all__ = [
    "IF_SERIAL_CHOICES",
    "ParallelOptionError",
    "ParallelOptionTypeError",
    "check_count",
    "check_if_serial",
    "check_optional_count",
]

#: What ``if_serial`` accepts (any letter case).
IF_SERIAL_CHOICES = ("raise", "warn", "ignore")


class ParallelOptionError(OptionError):
    """An argument of a map or a backend that cannot be used, said in scinexus's words.

    An `aioflow.OptionError`, so a `ValueError`, with the same fields:
    ``option``, ``expected`` and ``got``.
    """

    def __init__(self, option: str, expected: str, got: object, message: str) -> None:
        AioflowError.__init__(self, f"aioflow.parallel: {message}", option=option, expected=expected, got=got)


class ParallelOptionTypeError(ParallelOptionError, TypeError):
    """An argument of the wrong type (a bool or a float for a count): a `TypeError` too, as in scinexus."""


def check_count(value: object, name: str) -> int:
    """``value`` as an `int` >= 1 (``None`` refused).

    Raises:
        ParallelOptionTypeError: not an integer (bools, floats and ``None`` are not).
        ParallelOptionError: below 1.
    """
    return _count(value, name, "an int")


def check_optional_count(value: object, name: str) -> int | None:
    """``value`` as an `int` >= 1, or ``None``.

    Raises:
        ParallelOptionTypeError: neither an integer nor ``None`` (bools and floats are not integers).
        ParallelOptionError: below 1.
    """
    return None if value is None else _count(value, name, "an int or None")


def _count(value: object, name: str, expected: str) -> int:
    # bool is an Integral, numpy's bool is not: both tests are needed.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        message = f"{name} must be {expected}, got {value!r} (of type {type(value).__name__})"
        raise ParallelOptionTypeError(name, expected, value, message)
    if value < 1:
        raise ParallelOptionError(name, f"{expected} >= 1", value, f"{name} ({value}) must be greater than 0")
    return int(value)


def check_if_serial(value: object) -> str:
    """``if_serial`` in lower case.

    Raises:
        ParallelOptionError: not one of `IF_SERIAL_CHOICES` (a `ParallelOptionTypeError` when not a string).
    """
    choices = ", ".join(repr(c) for c in IF_SERIAL_CHOICES)
    expected = f"one of {choices} (any letter case)"
    if not isinstance(value, str):
        raise ParallelOptionTypeError("if_serial", expected, value, f"if_serial must be {expected}, got {value!r}")
    mode = value.lower()
    if mode not in IF_SERIAL_CHOICES:
        raise ParallelOptionError("if_serial", expected, value, f"invalid choice {value!r} for if_serial: {expected}")
    return mode
