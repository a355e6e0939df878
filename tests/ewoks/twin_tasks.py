"""An ewokscore task that waits a moment for a twin: another execution of it with the same inputs.

Two such executions save their outputs under the same name. On a thread
pool they would run at the same time, unless something makes them take
turns; `TWINS` counts how many ran, and how many at once at most.
"""

# ewokscore ships no type information: its Task is Any to mypy, and the class
# keywords (input_names=...) look like arguments object.__init_subclass__ refuses.
# mypy: disable-error-code="misc,call-arg"

from __future__ import annotations

import threading

from ewokscore import Task

# Long enough for a twin started at the same time to arrive, under any load.
WAIT_FOR_TWIN = 1.0


class _Twins:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.reset()

    def reset(self) -> None:
        self.ran = 0
        self.most_at_once = 0
        self._running = 0

    def run(self) -> None:
        with self._changed:
            self.ran += 1
            self._running += 1
            self.most_at_once = max(self.most_at_once, self._running)
            self._changed.notify_all()
            self._changed.wait_for(lambda: self._running > 1, timeout=WAIT_FOR_TWIN)
            self._running -= 1


TWINS = _Twins()


class WaitForTwin(Task, input_names=["x"], output_names=["result"]):
    """``result = x``, after waiting a moment for a twin."""

    def run(self) -> None:
        TWINS.run()
        self.outputs.result = self.inputs.x
