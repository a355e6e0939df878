"""``method`` tasks that record each real execution in a file (persisted results are reused without running)."""

from __future__ import annotations

from pathlib import Path


def add_logged(a: int, b: int = 0, log_file: str | None = None, name: str = "") -> int:
    """``a + b``; with ``log_file``, appends one line (``name``) per execution."""
    if log_file:
        with Path(log_file).open("a", encoding="utf-8") as f:
            f.write(f"{name}\n")
    return a + b
