"""A map over a generator reads it as workers need items: a million items, never materialised."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

import aioflow.parallel as par

from .par_tasks import inc

if TYPE_CHECKING:
    from collections.abc import Iterator

N = 1_000_000
CHUNKSIZE = 10_000
WORKERS = 2


class Instrumented:
    """A generator of ``range(n)`` that records how far it runs ahead of the consumer."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.pulled = 0
        self.consumed = 0
        self.max_ahead = 0

    def items(self) -> Iterator[int]:
        for x in range(self.n):
            self.pulled += 1
            self.max_ahead = max(self.max_ahead, self.pulled - self.consumed)
            yield x


@pytest.mark.parametrize("backend", ["multiprocess", "thread"])
@pytest.mark.parametrize("ordered", [True, False], ids=["imap", "as_completed"])
def test_million_item_generator_is_streamed_with_bounded_chunks_in_flight(backend: str, ordered: bool) -> None:
    """At most 2 chunks per worker plus the one being yielded are read ahead of the consumer."""
    par.set_parallel_backend(backend)
    source = Instrumented(N)
    mapper = par.imap if ordered else par.as_completed
    total = 0
    for result in mapper(inc, source.items(), max_workers=WORKERS, chunksize=CHUNKSIZE):
        source.consumed += 1
        total += result
    assert source.consumed == N
    assert total == N * (N + 1) // 2
    assert source.max_ahead <= (2 * WORKERS + 1) * CHUNKSIZE
