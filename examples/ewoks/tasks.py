"""ewokscore task classes for the example graphs (importable by name from every worker)."""

# ewokscore ships no type information: its Task is Any to mypy, and the class
# keywords (input_names=...) look like arguments object.__init_subclass__ refuses.
# mypy: disable-error-code="misc,call-arg"

from __future__ import annotations

import os
from pathlib import Path

from ewokscore import Task


class Add(
    Task,
    input_names=["a"],
    optional_input_names=["b", "log_file"],
    output_names=["result"],
):
    """``result = a + b`` (``b`` defaults to 0).

    With ``log_file``, appends one line per execution to that file, so a
    caller can count how often the task really ran (persisted results are
    reused without running it).
    """

    def run(self) -> None:
        b = self.inputs.b if not self.missing_inputs.b else 0
        if self.inputs.log_file:
            with Path(self.inputs.log_file).open("a", encoding="utf-8") as f:
                f.write(f"{self.label} {os.getpid()}\n")
        self.outputs.result = self.inputs.a + b


class Split(
    Task,
    input_names=["value"],
    output_names=["half", "rest"],
):
    """``half = value // 2``; ``rest`` is set only when ``value`` is odd."""

    def run(self) -> None:
        self.outputs.half = self.inputs.value // 2
        if self.inputs.value % 2:
            self.outputs.rest = 1


class Fail(Task, input_names=["message"], output_names=["never"]):
    """Always raises ``ValueError(message)``."""

    def run(self) -> None:
        raise ValueError(self.inputs.message)


def double(x: int) -> int:
    """A plain ``method`` task, for graphs that mix task types."""
    return 2 * x


def scaling_task(name: str) -> type:
    """A ``task_generator`` for ``generated`` nodes: ``"times<k>"`` gives a Task class computing ``x * k``.

    Classes are built once per name and process.
    """
    known = _GENERATED.get(name)
    if known is not None:
        return known
    factor = int(name.removeprefix("times"))

    def run(self: Task) -> None:
        self.outputs.result = self.inputs.x * factor

    task_class = type(name, (Task,), {"run": run}, input_names=["x"], output_names=["result"])
    _GENERATED[name] = task_class
    return task_class


_GENERATED: dict[str, type] = {}
