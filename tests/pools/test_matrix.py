"""Every task kind on every pool and start method: the right result, or a clear error within 5 s."""

from __future__ import annotations

import pytest
from matrix import cells, run_cell


@pytest.mark.parametrize(("pool", "context", "kind"), cells(), ids=lambda v: str(v))
def test_cell_works_or_fails_fast_and_clearly(pool: str, context: str | None, kind: str) -> None:
    """The cell gives its result, or an error naming the cause and the pools that allow it; never a hang."""
    cell = run_cell(pool, context, kind)
    assert cell.outcome in ("ok", "clear error"), cell
