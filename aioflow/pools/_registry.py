"""The pool types by name: which ones this installation offers, and the class of each, imported on first use."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import TYPE_CHECKING

from .._errors import OptionError

if TYPE_CHECKING:
    from ._base import Pool

__all__ = ["available_pools", "default_pool_type", "pool_class"]

# pool_type -> (module, class). A module is imported on first use, so that an
# optional library is loaded only by the pool that needs it. A pool whose
# module is not part of this installation is not offered.
_REGISTRY: dict[str, tuple[str, str]] = {
    "thread": ("aioflow.pools._thread", "ThreadPool"),
    "process": ("aioflow.pools._process", "ProcessPool"),
    "ndprocess": ("aioflow.pools._ndprocess", "NonDaemonicProcessPool"),
    "multiprocessing": ("aioflow.pools._multiprocessing", "MultiprocessingPool"),
    "ndmultiprocessing": ("aioflow.pools._multiprocessing", "NonDaemonicMultiprocessingPool"),
    "billiard": ("aioflow.pools._billiard", "BilliardPool"),
    "gevent": ("aioflow.pools._gevent", "GeventPool"),
    # Beyond one machine: existing clusters, driven by aioflow's scheduler.
    "dask": ("aioflow.pools._dask", "DaskPool"),
    "parsl": ("aioflow.pools._parsl", "ParslPool"),
    "mpi": ("aioflow.pools._mpi", "MPIPool"),
}
_CLASSES: dict[str, type[Pool]] = {}


def _registered() -> dict[str, tuple[str, str]]:
    return {name: entry for name, entry in _REGISTRY.items() if importlib.util.find_spec(entry[0]) is not None}


def available_pools() -> tuple[str, ...]:
    """The ``pool_type`` names this installation can open (optional libraries aside)."""
    return tuple(_registered())


def default_pool_type() -> str:
    """The pool used when ``pool_type`` is not given.

    ``gevent`` in a process gevent has monkey-patched (process pools can hang
    there), ``process`` otherwise.
    """
    from .._gevent_bridge import is_patched

    if is_patched() and "gevent" in _registered():
        return "gevent"
    return "process"


def pool_class(pool_type: str) -> type[Pool]:
    """The `Pool` subclass registered under ``pool_type``.

    Raises:
        OptionError: no pool of that name.
    """
    known = _CLASSES.get(pool_type)
    if known is not None:
        return known
    registered = _registered()
    if pool_type not in registered:
        import difflib

        names = ", ".join(map(repr, registered))
        close = difflib.get_close_matches(str(pool_type), list(registered), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise OptionError("pool_type", f"one of {names}{hint}", pool_type)
    module_name, class_name = _REGISTRY[pool_type]
    module = sys.modules.get(module_name) or importlib.import_module(module_name)
    cls: type[Pool] = getattr(module, class_name)
    _CLASSES[pool_type] = cls
    return cls
