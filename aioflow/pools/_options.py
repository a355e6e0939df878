"""The pool keywords, declared once, and the options every pool shares.

Six keywords choose and size a pool: ``pool_type``, ``max_workers``,
``scaling_workers``, ``context``, ``idle_timeout`` and ``pool_options``.
`aioflow.open_pool`, `aioflow.execute_graph_async` (the face, and the
engine's entry point under it), `aioflow.Executor` and the parallel
backends all take them. `PoolSpec` declares them once: their defaults, what
they mean, and their checks (`PoolSpec.from_keywords`). A face takes
``pool_type`` and ``**pool_keywords: Unpack[PoolKeywords]`` and is
decorated with `takes_pool_keywords`, which shows each keyword in its
signature with its default from `PoolSpec`: a new keyword, or a changed
default, is an edit here.

`PoolOptions` is what a pool is opened with (`Pool.options`): validated when
it is made, so that a wrong value is refused before any worker starts.
"""

from __future__ import annotations

import inspect
import os
from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict, TypeVar

from .._errors import OptionError
from ._registry import default_pool_type, pool_class

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Unpack

    from ._base import Pool

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "MAX_WORKERS",
    "PoolKeywords",
    "PoolOptions",
    "PoolSpec",
    "open_pool",
    "takes_pool_keywords",
]

F = TypeVar("F", bound="Callable[..., Any]")

#: Seconds a scaling pool keeps an idle worker before retiring it. A process
#: worker costs tens of megabytes while idle and tens to hundreds of
#: milliseconds to start again: after a minute without work, the memory is
#: worth more than the restart it would save.
DEFAULT_IDLE_TIMEOUT = 60.0

#: The most workers a pool may be asked for: 1,024, or one per CPU on a larger
#: machine. A count beyond it is a slip (9999 for 99) that would start that
#: many processes: no local pool runs more usefully (a process worker holds
#: file descriptors of the parent, whose default limit on Linux is 1,024), and
#: on a cluster pool max_workers only sizes the calls kept in flight.
MAX_WORKERS = max(1024, os.cpu_count() or 1)


class PoolOptions:
    """Options shared by every pool type. Validated at construction; immutable.

    Attributes:
        max_workers: the most workers the pool runs at once (``None``: the pool's default).
        scaling_workers: start workers only when tasks need them, and reuse idle
            ones first (``True``), or start ``max_workers`` at once (``False``).
        context: the multiprocessing start method of process-based pools
            (``spawn``, ``fork``, ``forkserver``; ``None``: the platform default).
        idle_timeout: with ``scaling_workers``, seconds after which a worker
            with nothing to do is retired (``None``: never).
        extra: pool-specific keyword arguments (``pool_options=``).
    """

    # A plain class rather than a frozen dataclass: every first execution
    # makes one, and a dataclass's generated methods cost its import 0.4 ms.
    __slots__ = ("context", "extra", "idle_timeout", "max_workers", "scaling_workers")

    max_workers: int | None
    scaling_workers: bool
    context: str | None
    idle_timeout: float | None
    extra: dict[str, Any]

    def __init__(
        self,
        max_workers: int | None = None,
        scaling_workers: bool = True,
        context: str | None = None,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        extra: dict[str, Any] | None = None,
    ) -> None:
        mw = max_workers
        if mw is not None and (isinstance(mw, bool) or not isinstance(mw, int) or mw < 1):
            raise OptionError(
                "max_workers",
                "an int >= 1 or None",
                mw,
                f"max_workers must be greater than 0: an int >= 1, or None (got {mw!r} of type {type(mw).__name__})",
            )
        if mw is not None and mw > MAX_WORKERS:
            raise OptionError("max_workers", f"an int from 1 to {MAX_WORKERS} (docs/pools.md), or None", mw)
        if not isinstance(scaling_workers, bool):
            raise OptionError("scaling_workers", "True or False", scaling_workers)
        if context is not None:
            import multiprocessing

            methods = multiprocessing.get_all_start_methods()
            if context not in methods:
                raise OptionError("context", f"one of {', '.join(map(repr, methods))} or None", context)
        it = idle_timeout
        if it is not None and (isinstance(it, bool) or not isinstance(it, (int, float)) or not it > 0):
            raise OptionError("idle_timeout", "a number of seconds > 0, or None (never retire idle workers)", it)
        if extra is None:
            extra = {}
        elif not isinstance(extra, dict):
            raise OptionError("pool_options", "a dict", extra)
        set_field = object.__setattr__
        set_field(self, "max_workers", mw)
        set_field(self, "scaling_workers", scaling_workers)
        set_field(self, "context", context)
        set_field(self, "idle_timeout", idle_timeout)
        set_field(self, "extra", extra)

    def _fields(self) -> tuple[Any, ...]:
        return (self.max_workers, self.scaling_workers, self.context, self.idle_timeout, self.extra)

    def __setattr__(self, name: str, value: Any) -> None:
        msg = f"PoolOptions is immutable: cannot assign to {name!r}"
        raise AttributeError(msg)

    def __delattr__(self, name: str) -> None:
        msg = f"PoolOptions is immutable: cannot delete {name!r}"
        raise AttributeError(msg)

    def __eq__(self, other: object) -> bool:
        if type(other) is not PoolOptions:
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash((PoolOptions, *self._fields()[:4], tuple(self.extra.items())))

    def __repr__(self) -> str:
        return (
            f"PoolOptions(max_workers={self.max_workers!r}, scaling_workers={self.scaling_workers!r}, "
            f"context={self.context!r}, idle_timeout={self.idle_timeout!r}, extra={self.extra!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (PoolOptions, self._fields())


class PoolKeywords(TypedDict, total=False):
    """The pool keywords but ``pool_type``, for type checkers: a face takes ``**pool_keywords: Unpack[PoolKeywords]``.

    Their defaults and meaning are `PoolSpec`'s fields of the same names.
    """

    max_workers: int | None
    scaling_workers: bool
    context: str | None
    idle_timeout: float | None
    pool_options: dict[str, Any] | None


class PoolSpec(NamedTuple):
    """Which pool to open, and how: the six pool keywords, with their defaults.

    Give all but ``pool_type`` by name: their order here is not part of the
    record's contract. ``spec._replace(max_workers=4)`` is a copy with one
    keyword changed.

    Attributes:
        pool_type: a name from `aioflow.available_pools` (``None``: ``process``,
            or ``gevent`` when gevent has monkey-patched the process).
        max_workers: the most tasks that run at once (``None``: the pool's default).
        scaling_workers: start workers as tasks need them, reusing idle ones
            (``True``), or start ``max_workers`` at once (``False``).
        context: the start method of process pools: ``spawn``, ``fork``,
            ``forkserver`` (``None``: the platform's default).
        idle_timeout: with ``scaling_workers``, retire a worker idle for this
            many seconds (``None``: never).
        pool_options: keyword arguments of the pool type (``initializer``,
            ``initargs``, ...), as `PoolOptions.extra`.
    """

    pool_type: str | None = None
    max_workers: int | None = None
    scaling_workers: bool = True
    context: str | None = None
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT
    pool_options: dict[str, Any] | None = None

    @classmethod
    def from_keywords(cls, caller: str, pool_type: str | None, keywords: Mapping[str, Any]) -> PoolSpec:
        """The spec of a face's ``pool_type`` and ``**pool_keywords``, checked before any worker starts.

        The pool type is checked when the pool is opened (`open`), which
        imports its module.

        Raises:
            TypeError: a keyword that is none of the pool keywords, in Python's
                words for ``caller`` (the face's name).
            OptionError: a value no pool can take.
        """
        unknown = sorted(keywords.keys() - _KEYWORDS)
        if unknown:
            msg = f"{caller}() got an unexpected keyword argument {unknown[0]!r}"
            raise TypeError(msg)
        spec = cls(pool_type, **keywords)
        spec.options  # noqa: B018 - made to be checked
        return spec

    @property
    def options(self) -> PoolOptions:
        """The options a pool of this spec is opened with.

        Raises:
            OptionError: a value a pool cannot take.
        """
        return PoolOptions(
            max_workers=self.max_workers,
            scaling_workers=self.scaling_workers,
            context=self.context,
            idle_timeout=self.idle_timeout,
            extra=dict(self.pool_options or {}),
        )

    def pool_class(self) -> type[Pool]:
        """The class of the pool type (imported now).

        Raises:
            OptionError: an unknown pool type (with a suggestion).
        """
        return pool_class(self.pool_type or default_pool_type())

    def open(self) -> Pool:
        """A pool of this spec. Opening starts no worker: they start on first use.

        Raises:
            OptionError: an unknown pool type, or an option the pool cannot honour.
        """
        options = self.options
        return self.pool_class()(options)


_KEYWORDS = frozenset(PoolKeywords.__annotations__)

# The keywords as a face's signature shows them: keyword-only, with their defaults.
_PARAMETERS = tuple(
    inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        # As written (a named tuple keeps its annotations as forward references).
        annotation=PoolSpec.__annotations__[name].__forward_arg__,
    )
    for name, default in PoolSpec._field_defaults.items()
    if name in _KEYWORDS
)


def takes_pool_keywords(fn: F) -> F:
    """Show the pool keywords in ``fn``'s signature, right after ``pool_type``, in place of ``**pool_keywords``.

    ``fn`` takes ``pool_type`` and ``**pool_keywords: Unpack[PoolKeywords]``:
    its callers pass the keywords by name, and `inspect.signature` (``help``,
    IDEs, docs) lists each one, keyword-only, with its default from `PoolSpec`.
    """
    signature = inspect.signature(fn)
    parameters: list[inspect.Parameter] = []
    for parameter in signature.parameters.values():
        if parameter.kind is not inspect.Parameter.VAR_KEYWORD:
            parameters.append(parameter)
        if parameter.name == "pool_type":
            parameters.extend(_PARAMETERS)
    fn.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    return fn


@takes_pool_keywords
def open_pool(pool_type: str | None = None, **pool_keywords: Unpack[PoolKeywords]) -> Pool:
    """Open a pool that several executions can share.

    Use it as a context manager, ``with`` or ``async with``; workers start on
    first use and stop when the block ends. Pass it to ``execute_graph(...,
    pool=pool)`` to reuse warm workers across executions. With
    ``scaling_workers``, a worker idle for ``idle_timeout`` seconds is retired
    (``None``: never), so a long-lived pool gives memory back between bursts.

    Args:
        pool_type, max_workers, scaling_workers, context, idle_timeout, pool_options:
            the pool keywords (`PoolSpec`).

    Raises:
        OptionError: an unknown pool type or an invalid option (before any
            worker starts).
    """
    return PoolSpec.from_keywords("open_pool", pool_type, pool_keywords).open()
