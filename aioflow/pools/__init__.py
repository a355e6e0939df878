"""Worker pools, by name. Each pool module is imported only when its pool is opened."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._errors import InitializerFailed as InitializerFailed
from ._base import Pool as Pool
from ._options import DEFAULT_IDLE_TIMEOUT as DEFAULT_IDLE_TIMEOUT
from ._options import PoolOptions as PoolOptions
from ._options import PoolSpec, takes_pool_keywords
from ._registry import available_pools as available_pools
from ._registry import default_pool_type as default_pool_type
from ._registry import pool_class as pool_class

if TYPE_CHECKING:
    from typing import Unpack

    from ._options import PoolKeywords

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
            the pool keywords (`aioflow.pools._options.PoolSpec`).

    Raises:
        OptionError: an unknown pool type or an invalid option (before any
            worker starts).
    """
    return PoolSpec.from_keywords("open_pool", pool_type, pool_keywords).open()
