"""Worker pools, by name. Each pool module is imported only when its pool is opened.

The names below are imported on first use, as the top-level package's are: a
worker process that unpickles one of the pools' classes (a spawned worker's
process object, a call's wrapper) imports the module that defines it, not the
machinery of every pool.
"""

from __future__ import annotations

import importlib as _importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._broken import InitializerFailed as InitializerFailed
    from ._base import Pool as Pool
    from ._options import DEFAULT_IDLE_TIMEOUT as DEFAULT_IDLE_TIMEOUT
    from ._options import PoolOptions as PoolOptions
    from ._options import open_pool as open_pool
    from ._registry import available_pools as available_pools
    from ._registry import default_pool_type as default_pool_type
    from ._registry import pool_class as pool_class

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "InitializerFailed",
    "Pool",
    "PoolOptions",
    "available_pools",
    "default_pool_type",
    "open_pool",
    "pool_class",
]

#: Public name -> the module that defines it.
_LAZY = {
    "DEFAULT_IDLE_TIMEOUT": "._options",
    "InitializerFailed": ".._broken",
    "Pool": "._base",
    "PoolOptions": "._options",
    "available_pools": "._registry",
    "default_pool_type": "._registry",
    "open_pool": "._options",
    "pool_class": "._registry",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        msg = f"module 'aioflow.pools' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(_importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
