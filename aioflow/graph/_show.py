"""Showing what documents hold in messages: values, node ids and sources cut to a readable size.

Documents may be of any size and depth, and their values may have a
``__repr__`` that raises: every value a message names goes through `_show`
(node ids through `_fmt`, sources through `_short`), which never raises.
`_did_you_mean` suggests the known name closest to a wrong one.

Imports: `_limits` only.
"""

from __future__ import annotations

import reprlib
from typing import TYPE_CHECKING, Any

from ._limits import _MAX_ID_PARTS, _MAX_NESTING, _MAX_SUBGRAPH_DEPTH, _SUGGESTION_LENGTH

if TYPE_CHECKING:
    from collections.abc import Iterable


def _repr(maxlevel: int, maxparts: int) -> reprlib.Repr:
    """A `reprlib.Repr` showing ``maxlevel`` levels of ``maxparts`` items at most, strings of 80 characters."""
    shown = reprlib.Repr()
    shown.maxlevel = maxlevel
    shown.maxlist = shown.maxtuple = shown.maxset = shown.maxfrozenset = shown.maxdeque = maxparts
    shown.maxdict = min(maxparts, 4)
    shown.maxstring = shown.maxother = 80
    shown.maxlong = 40
    return shown


# Values may share their parts (YAML aliases): at most 6**3 parts are shown.
_VALUE_REPR = _repr(3, 6)
# Ids are bounded (`_MAX_ID_PARTS`), and nest one level per subgraph: shown whole.
_ID_REPR = _repr(_MAX_NESTING + _MAX_SUBGRAPH_DEPTH, _MAX_ID_PARTS)


def _show(value: Any, shown: reprlib.Repr = _VALUE_REPR) -> str:
    """``repr(value)``, cut to a readable size: values come from documents of any size and depth."""
    try:
        return shown.repr(value)
    except Exception:  # an int of 4,300 digits or more, a __repr__ that raises
        return f"<a {type(value).__name__}>"


def _fmt(node_id: Any) -> str:
    return _show(node_id, _ID_REPR)


def _short(source: Any) -> str:
    """A source, named in messages: a string of at most 200 characters (its middle cut out), anything else shown."""
    if not isinstance(source, str):
        return _show(source)
    return source if len(source) <= 200 else f"{source[:98]}...{source[-99:]}"


def _reason(exc: BaseException) -> str:
    """An exception, in a message."""
    if isinstance(exc, RecursionError):
        return "too deeply nested to be read"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    return text if len(text) <= 300 else text[:297] + "..."


def _did_you_mean(wanted: Any, known: Iterable[Any]) -> str:
    """`` (did you mean 'x'?)`` with the known name closest to ``wanted``, or ``""``."""
    text = wanted if isinstance(wanted, str) else _fmt(wanted)
    if len(text) > _SUGGESTION_LENGTH:
        return ""
    names: dict[str, Any] = {}
    for k in known:
        name = k if isinstance(k, str) else _fmt(k)
        if len(name) <= _SUGGESTION_LENGTH:
            names.setdefault(name, k)
    import difflib  # here: only an error message needs it

    close = difflib.get_close_matches(text, list(names), n=1)
    return f" (did you mean {_fmt(names[close[0]])}?)" if close else ""
