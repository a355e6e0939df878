"""What one load reports: every problem found, and the budgets that bound its work.

Problems are collected, not raised one by one: a `GraphError` lists every
problem found, each naming the node or link and what was expected. Where a
problem is (`_At`) is formatted only when a problem is reported, so that
loading a valid graph stays fast. The budgets are per load: did-you-mean
suggestions (each scans every known id) and the nodes and links that
expansion makes (`_MAX_EXPANSION`); running out of one is reported once.

Imports: `aioflow._errors`, `_limits`, `_show`, `_values`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._errors import GraphError
from ._limits import _MAX_EXPANSION, _MAX_SUGGESTIONS
from ._show import _did_you_mean, _fmt
from ._values import _copy_structure, _Unbounded

if TYPE_CHECKING:
    from collections.abc import Iterable


class _At:
    """Where a problem is, formatted only when a problem is reported (loading stays fast)."""

    __slots__ = ("ids", "kind", "prefix")

    def __init__(self, prefix: str, kind: str, *ids: Any) -> None:
        self.prefix = prefix
        self.kind = kind
        self.ids = ids

    def __str__(self) -> str:
        if self.kind == "link":
            return f"{self.prefix}link {_fmt(self.ids[0])} -> {_fmt(self.ids[1])}: "
        return f"{self.prefix}{self.kind} {_fmt(self.ids[0])}: "


class _Report:
    """The problems of one load, and its budgets (see the module docstring)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.problems: list[str] = []
        self.suggestions = _MAX_SUGGESTIONS
        # Nodes and links made by expansion so far (`_MAX_EXPANSION`), and
        # whether running out of a budget of expansion was reported.
        self.expanded = 0
        self.too_big = False

    def problem(self, where: str | _At, text: str) -> None:
        self.problems.append(f"{where}{text}")

    def raise_if_problems(self) -> None:
        if self.problems:
            raise GraphError(self.name, self.problems)

    def did_you_mean(self, wanted: Any, known: Iterable[Any]) -> str:
        """`_did_you_mean`, for the first `_MAX_SUGGESTIONS` problems of a load only."""
        if self.suggestions <= 0:
            return ""
        self.suggestions -= 1
        return _did_you_mean(wanted, known)

    def copied(self, value: Any, where: str | _At, what: str) -> Any:
        """A copy of a document value (see `_copy_structure`); None, reported, past its bounds."""
        try:
            return _copy_structure(value)
        except _Unbounded as exc:
            self.problem(where, f"{what} {exc}")
            return None

    def grow(self, count: int, where: str | _At, cause: str) -> bool:
        """Count ``count`` more nodes and links made by expansion; False past `_MAX_EXPANSION`.

        Reported once, with ``cause``: expansion stops there.
        """
        self.expanded += count
        if self.expanded <= _MAX_EXPANSION:
            return True
        self.overgrown(where, f"{_MAX_EXPANSION:,} nodes and links ({cause})")
        return False

    def overgrown(self, where: str | _At, what: str) -> None:
        if not self.too_big:
            self.too_big = True
            self.problem(where, f"expanding the graph makes more than {what}")
