"""`aioflow.Pool` has two sides: the public interface docs/api.md documents, and the engine's private protocol.

Users hold the public side (`aioflow.pools._base.Pool`); the engine (the
scheduler, `aioflow.Executor`, `aioflow.parallel`) also speaks
`EngineProtocol` (`aioflow.pools._protocol`). Every public member of a pool
belongs to exactly one side, and the engine reads nothing else of a pool.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import aioflow
from aioflow.pools import available_pools, pool_class
from aioflow.pools._protocol import EngineProtocol

if TYPE_CHECKING:
    from collections.abc import Iterable

#: The members of "Pool" in docs/api.md (``with`` / ``async with`` are the dunder methods).
DOCUMENTED = {"name", "options", "capacity", "closed", "executor", "close", "aclose", "abort", "aabort"}

#: The engine's protocol with its pools.
ENGINE = {
    "uses_processes",
    "workers_elsewhere",
    "calls_in_flight_per_worker",
    "calls_in_flight",
    "chains_calls",
    "keeps_results_remote",
    "runs_in_gevent_hub",
    "runs_in_this_process",
    "scope_to_running_loop",
    "bind",
    "bind_remote",
    "afetch",
    "enter",
    "leave",
    "describe_lost_workers",
    "lost_worker",
    "translate",
    "discard_broken",
    "worker_of",
    "stop_call",
    "astop_call",
    "stops_one_call",
}

#: Public members of one pool type only, and who reads them.
OWN = {"parsl": {"dfk"}}  # aioflow.parsl.ParslPoolExecutor: Parsl's DataFlowKernel, as Parsl's class holds it

PACKAGE = Path(aioflow.__file__).resolve().parent


def _public(names: Iterable[str]) -> set[str]:
    return {name for name in names if not name.startswith("_")}


def test_what_open_pool_returns_is_the_documented_interface_and_the_engine_protocol() -> None:
    with aioflow.open_pool("thread", max_workers=1) as pool:
        assert isinstance(pool, aioflow.Pool)
        assert isinstance(pool, EngineProtocol)
        members = _public(dir(pool))
    assert members - ENGINE == DOCUMENTED
    assert members & ENGINE == ENGINE


def test_the_public_class_declares_the_documented_members_and_the_protocol_the_engine_ones() -> None:
    declared = _public(vars(aioflow.Pool)) | _public(aioflow.Pool.__annotations__)
    assert declared == DOCUMENTED
    assert _public(vars(EngineProtocol)) | {"name"} == ENGINE | {"name"}
    assert not DOCUMENTED & ENGINE


@pytest.mark.parametrize("pool_type", available_pools())
def test_no_pool_type_adds_a_public_member_but_its_own(pool_type: str) -> None:
    cls = pool_class(pool_type)
    assert _public(dir(cls)) - DOCUMENTED - ENGINE == OWN.get(pool_type, set())


def _pool_attributes(path: Path) -> set[str]:
    """The public attributes a module reads of a pool: of ``pool``, ``owned``, ``self._pool`` and ``self.pool``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Attribute) or node.attr.startswith("_"):
            continue
        value = node.value
        named = isinstance(value, ast.Name) and value.id in {"pool", "owned"}
        held = isinstance(value, ast.Attribute) and value.attr in {"_pool", "pool"}
        if named or held:
            found.add(node.attr)
    return found


ENGINE_MODULES = sorted(
    [
        *(PACKAGE / "scheduler").glob("*.py"),
        *(PACKAGE / "parallel").glob("*.py"),
        PACKAGE / "_executor.py",
        PACKAGE / "_api.py",
        PACKAGE / "parsl.py",
    ]
)


@pytest.mark.parametrize("path", ENGINE_MODULES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_the_engine_reads_of_a_pool_only_its_two_sides(path: Path) -> None:
    own = OWN["parsl"] if path.name == "parsl.py" else set()
    assert _pool_attributes(path) <= DOCUMENTED | ENGINE | own


def test_the_scan_sees_what_the_engine_reads() -> None:
    """The scan above is not vacuous: the driver and the executor read members of both sides."""
    read = set().union(*(_pool_attributes(path) for path in ENGINE_MODULES))
    assert {"bind", "enter", "leave", "translate", "capacity", "executor", "aabort"} <= read
