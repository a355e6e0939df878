"""The pools that override a library's internals open only on the versions those overrides were written for.

On any other version they refuse at once, with an `aioflow.PoolError` naming
the pool, the version found and the versions supported, instead of running
on internals they do not know.
"""

from __future__ import annotations

import pytest
from graphs import method_node

import aioflow
from aioflow.pools import _billiard_internals, _mp_start


@pytest.mark.parametrize("pool_type", ["multiprocessing", "ndmultiprocessing"])
@pytest.mark.parametrize(
    ("running", "found"),
    [(("cpython", (3, 99, 1)), "cpython 3.99.1"), (("pypy", (3, 11, 7)), "pypy 3.11.7")],
    ids=["CPython-3.99", "PyPy"],
)
def test_a_multiprocessing_pool_refuses_a_python_it_was_not_written_for(
    monkeypatch: pytest.MonkeyPatch, pool_type: str, running: tuple[str, tuple[int, ...]], found: str
) -> None:
    monkeypatch.setattr(_mp_start, "_running_version", lambda: running)
    with pytest.raises(aioflow.PoolError) as info:
        aioflow.open_pool(pool_type)
    message = str(info.value)
    assert (
        f"the {pool_type!r} pool overrides internals of the multiprocessing module of CPython 3.11, 3.12, 3.13"
        in message
    )
    assert f"and this is {found}" in message
    assert "use pool_type 'process' or 'ndprocess'" in message


@pytest.mark.parametrize("found", ["4.2.1", "5.0.0", "4.4.0rc1"])
def test_the_billiard_pool_refuses_a_billiard_it_was_not_written_for(
    monkeypatch: pytest.MonkeyPatch, found: str
) -> None:
    monkeypatch.setattr(_billiard_internals, "_installed_version", lambda: found)
    with pytest.raises(aioflow.PoolError) as info:
        aioflow.open_pool("billiard")
    message = str(info.value)
    assert f"the 'billiard' pool overrides internals of billiard 4.3.x, and billiard {found} is installed" in message
    assert "pip install 'billiard>=4.3,<4.4'" in message


def test_an_execution_on_an_unknown_version_fails_before_any_worker_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The refusal comes when the pool opens: the graph does not start, no node fails."""
    monkeypatch.setattr(_billiard_internals, "_installed_version", lambda: "4.2.1")
    with pytest.raises(aioflow.PoolError, match=r"billiard 4\.2\.1 is installed"):
        aioflow.execute_graph({"nodes": [method_node("a", "tasks.inc")]}, pool_type="billiard")


@pytest.mark.parametrize("pool_type", ["multiprocessing", "ndmultiprocessing", "billiard"])
def test_the_versions_installed_here_are_supported(pool_type: str) -> None:
    """The suite runs on versions the overrides were written for (else every other test of these pools is moot)."""
    with aioflow.Executor(pool_type, max_workers=1, context="fork") as executor:
        assert executor.submit(abs, -3).result(timeout=60) == 3
