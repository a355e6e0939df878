"""An idle worker's end: a stop or a loss.

That a worker dying mid-task fails its own node with WorkerLostError (node,
pid and what ended it, as fields), and that workers killed while idle cost
the next execution nothing, runs on every process pool and start method in
tests/test_pool_behaviour.py.
"""

from __future__ import annotations

import logging
import signal as signals

from aioflow.pools._outcomes import idle_exit_level


def test_a_stop_signal_to_an_idle_worker_is_not_a_warning() -> None:
    """``kill`` of the whole process group ends idle workers too: that is a stop, not a loss."""
    for stop in (signals.SIGTERM, signals.SIGINT, signals.SIGHUP):
        assert idle_exit_level(-stop) == logging.INFO
    for lost in (-signals.SIGKILL, -signals.SIGSEGV, 1, None):
        assert idle_exit_level(lost) == logging.WARNING
