"""The smallest parts of a document: node ids, output and input names, and values.

- A node id is a string, an int within 64 bits, or a non-empty list of ids
  (JSON writes tuple ids as lists; they become tuples), of at most
  `_MAX_ID_PARTS` parts and `_MAX_NESTING` levels.
- An output name is a string or an int; an input name is a string, or the
  index of a positional input (an int, or a digit string) up to `_MAX_POSITION`.
- A value is copied (its dicts, lists and tuples), so that a `Graph` shares
  nothing with the caller's document. A value met twice in one document
  value (YAML anchors and aliases, one Python object used twice) is copied
  once, so that copying stays linear in the text; a value nested or expanded
  beyond the bounds is refused (`_Unbounded`).

The checks return None for what they refuse; `_expected_id` and
`_bad_input_name` say why, for a message.

Imports: `_limits`, `_show`, and `_model` for types.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._limits import _MAX_ID_PARTS, _MAX_INT_ID, _MAX_NESTING, _MAX_POSITION, _MAX_SHARED_EXPANSION, _POSITION_DIGITS
from ._show import _show

if TYPE_CHECKING:
    from ._model import NodeId

_SCALARS = frozenset((str, int, float, bool, type(None)))

_ID_RULE = "a string, an int or a non-empty list of those"
_ID_LIMITS = f" (ints within ±2**63; lists of at most {_MAX_ID_PARTS} parts, {_MAX_NESTING} levels deep)"


def _normalise_id(value: Any) -> NodeId | None:
    """A node id as written (JSON writes tuple ids as lists), or None for a value that cannot be one."""
    if type(value) is str:  # the usual case
        return value
    return _normalise_id_part(value, 0, [_MAX_ID_PARTS])


def _normalise_id_part(value: Any, depth: int, budget: list[int]) -> NodeId | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (str, int)):
        budget[0] -= 1
        if budget[0] < 0:
            return None
        return value if isinstance(value, str) or -_MAX_INT_ID <= value < _MAX_INT_ID else None
    if isinstance(value, (list, tuple)) and value and depth < _MAX_NESTING:
        parts = []
        for item in value:
            part = _normalise_id_part(item, depth + 1, budget)
            if part is None:
                return None
            parts.append(part)
        return tuple(parts)
    return None


def _expected_id(value: Any) -> str:
    """What a node id must be, for a message about ``value``, which is not one."""
    limits = _ID_LIMITS if isinstance(value, (int, list, tuple)) and not isinstance(value, bool) and value else ""
    return f"{_ID_RULE}{limits} (got {_show(value)})"


def _is_graph_id(value: Any) -> bool:
    if isinstance(value, str):
        return True
    return isinstance(value, int) and not isinstance(value, bool) and -_MAX_INT_ID <= value < _MAX_INT_ID


def _is_name(value: Any) -> bool:
    """Whether ``value`` can name an output: a str or an int."""
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _input_name(value: Any) -> str | int | None:
    """The input ``value`` names: a str, or the index of a positional input (an int, or a digit string).

    None when it cannot name an input, or names a position beyond `_MAX_POSITION`
    (`_bad_input_name` says which).
    """
    if isinstance(value, str):
        if not value.isdecimal():
            return value
        digits = value.lstrip("0") or "0"
        if len(digits) > _POSITION_DIGITS:  # beyond the bound anyway; int() refuses 4,300 digits
            return None
        value = int(digits)
    elif not isinstance(value, int) or isinstance(value, bool):
        return None
    return value if 0 <= value <= _MAX_POSITION else None


def _bad_input_name(what: str, value: Any) -> str:
    """Why ``value`` is no input name (`_input_name` returned None), as a message about ``what``."""
    if _is_name(value):
        return (
            f"{what} {_show(value)} is a positional input index beyond the bound: indices lie between 0 and "
            f"{_MAX_POSITION} (a task is called with at most {_MAX_POSITION + 1:,} positional inputs)"
        )
    return f"{what} must be a string or an int (got {_show(value)})"


class _Unbounded(Exception):
    """A value nests more than `_MAX_NESTING` levels or contains itself, or expands beyond `_MAX_SHARED_EXPANSION`.

    Its message says which, after the value's name.
    """


_TOO_DEEP = f"is nested more than {_MAX_NESTING} lists or objects deep (or contains itself)"
_TOO_SHARED = (
    f"shares parts (YAML aliases, or one object used several times) that make it more than "
    f"{_MAX_SHARED_EXPANSION:,} items once expanded"
)


def _copy_structure(value: Any) -> Any:
    """A copy of the dicts, lists and tuples of a document value; anything else is kept as it is.

    Raises:
        _Unbounded: the value nests more than `_MAX_NESTING` levels, contains
            itself, or expands to more than `_MAX_SHARED_EXPANSION` items.
    """
    # Exact type checks first: isinstance(x, Mapping) is slow on large documents.
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is dict or kind is list or kind is tuple or isinstance(value, Mapping):
        return _Copy().copy(value, 0)
    return value


class _Copy:
    """The copy of one value: what is met twice is copied once, and the depth and expansion are bounded.

    A container already copied is reused, and its height (levels, itself
    included) is checked against the depth it is met at again; a container
    that contains itself is met deeper and deeper until the bound. Its size
    (items, expanded) counts again each time it is met: comparing two copies
    of the value walks it expanded, so only values without shared parts may
    be larger than `_MAX_SHARED_EXPANSION`.
    """

    __slots__ = ("copies", "deepest", "expanded")

    def __init__(self) -> None:
        self.copies: dict[int, tuple[Any, int, int]] = {}  # id -> copy, height, expanded size
        self.deepest = 0  # the deepest level reached under the container being copied
        self.expanded = 0  # items copied so far, shared parts counted each time they are met

    def copy(self, value: Any, depth: int) -> Any:
        kind = type(value)
        if kind in _SCALARS or not (kind is dict or kind is list or kind is tuple or isinstance(value, Mapping)):
            return value
        known = self.copies.get(id(value))
        if known is not None:
            result, height, size = known
            if depth + height > _MAX_NESTING:
                raise _Unbounded(_TOO_DEEP)
            self.expanded += size
            if self.expanded > _MAX_SHARED_EXPANSION:
                raise _Unbounded(_TOO_SHARED)
            self.deepest = max(self.deepest, depth + height)
            return result
        if depth >= _MAX_NESTING:
            raise _Unbounded(_TOO_DEEP)
        outer = self.deepest
        self.deepest = depth + 1
        before = self.expanded
        self.expanded += len(value)
        below = depth + 1
        if kind is list:
            result = [self.copy(v, below) for v in value]
        elif kind is tuple:
            result = tuple([self.copy(v, below) for v in value])
        else:
            result = {k: self.copy(v, below) for k, v in value.items()}
        self.copies[id(value)] = (result, self.deepest - depth, self.expanded - before)
        self.deepest = max(outer, self.deepest)
        return result
