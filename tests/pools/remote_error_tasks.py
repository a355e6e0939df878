"""Tasks that raise exceptions which cannot travel back from a worker as they are."""

from __future__ import annotations

from typing import Any, NoReturn


class TwoArgError(Exception):
    """Its ``__init__`` needs two arguments, so it cannot be rebuilt from ``args`` alone."""

    def __init__(self, what: str, code: int) -> None:
        super().__init__(f"{what} (code {code})")
        self.what = what
        self.code = code


class RefusesPickling(Exception):
    """Its ``__reduce__`` raises."""

    def __reduce__(self) -> Any:
        raise RuntimeError("this exception refuses to be pickled")


class Fine(Exception):
    """A plain exception: it comes back as itself."""


def raise_two_arg() -> NoReturn:
    raise TwoArgError("detector offline", 7)


def raise_refuses_pickling() -> NoReturn:
    raise RefusesPickling("beam dump")


def raise_fine() -> NoReturn:
    raise Fine("plain and picklable")


def value(x: int = 0) -> int:
    return x


def die(pid_file: str, how: str) -> None:
    """Write this worker's pid to ``pid_file``, then end the worker: ``SIGKILL``, ``SIGTERM`` or ``exit3``."""
    import os
    import signal
    from pathlib import Path

    Path(pid_file).write_text(str(os.getpid()))
    if how == "exit3":
        os._exit(3)
    os.kill(os.getpid(), getattr(signal, how))


class KeepsCause(Exception):
    """Pickles its ``__cause__`` along, as every exception does once tblib's pickling support is installed."""

    def __reduce__(self) -> Any:
        return _with_cause, (type(self), self.args, self.__cause__)


def _with_cause(cls: type[BaseException], args: tuple[Any, ...], cause: BaseException | None) -> BaseException:
    exc = cls(*args)
    exc.__cause__ = cause
    return exc
