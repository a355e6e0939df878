"""A task's identity for the cache: what it runs, down to its code, as one digest.

`task_identity` gives, for a node, a digest (SHA-256, hex) over its task
type, its identifier and the code that runs it, so that editing a task
changes its identity and its cached results are not reused:

- ``method``, ``ppfmethod``, ``class``: the callable the identifier names
  (``pkg.mod.func``, ``pkg.mod.Class``, ``/path/file.py::func``), imported
  here as a worker imports it: its own source (``inspect.getsource``, of
  the function under its decorators), its qualified name, and the source
  of the whole module it lives in (a helper of the same module that
  changes, changes it too). A callable without Python source (a builtin, a
  C extension's) is identified by its module's file (path, size and
  modification time) or, without one, by its name and the Python version;
- ``generated``: the generator's, as above, and the identifier;
- ``script`` and ``notebook``: the bytes of the file the identifier names
  (a command that is not a file: the command itself);
- ``ppfport``: its type (it runs no code of its own).

Code in other modules the task calls is not part of it: a change there is
not noticed (docs/journal.md says what to do). When the code cannot be
read here (the module does not import in this process), the identity is
``None``, with the reason: such a node is never answered from the cache.

Digests are computed once per process for each identifier and file
version (`_IDENTITIES`), and `task_identities` asks once per task of a
graph: a graph of 10,000 nodes of one task reads and looks at its module
once.

Imports: `aioflow._tasks` (to import a callable as a worker does).
"""

from __future__ import annotations

import hashlib
import inspect
import os
import sys
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ..graph import Node, NodeId

__all__ = ["TaskIdentity", "task_identities", "task_identity"]


class TaskIdentity(NamedTuple):
    """A node's task identity.

    Attributes:
        digest: ``OWN:MODULE``, two SHA-256 digests (hex, 128 bits each):
            ``OWN`` of the task type, identifier and the task's own code;
            ``MODULE`` of the module it lives in (``-`` for a file task).
            ``None`` when the code could not be read here.
        name: what the task is, for messages (``tasks.fit``).
        problem: why ``digest`` is ``None``.
    """

    digest: str | None
    name: str
    problem: str | None = None


# (task_type, identifier, generator) -> (file versions it was computed from, identity).
_IDENTITIES: dict[tuple[Any, ...], tuple[tuple[tuple[str, int, int], ...], TaskIdentity]] = {}


def task_identities(nodes: Iterable[Node]) -> dict[NodeId, TaskIdentity]:
    """Each node's `task_identity`: once per task, however many nodes run it (its files looked at once)."""
    by_task: dict[tuple[Any, ...], TaskIdentity] = {}
    identities = {}
    for node in nodes:
        key = _key(node)
        identity = by_task.get(key)
        if identity is None:
            identity = by_task[key] = task_identity(node)
        identities[node.id] = identity
    return identities


def task_identity(node: Node) -> TaskIdentity:
    """The identity of ``node``'s task (see the module's docstring)."""
    key = _key(node)
    known = _IDENTITIES.get(key)
    if known is not None and all(_stat(path) == (path, size, mtime) for path, size, mtime in known[0]):
        return known[1]
    files: list[tuple[str, int, int]] = []
    identity = _compute(node, files)
    _IDENTITIES[key] = (tuple(files), identity)
    return identity


def _key(node: Node) -> tuple[Any, ...]:
    """What names a node's task: its type, identifier (a string, or its repr) and generator."""
    identifier = node.task_identifier
    return node.task_type, identifier if isinstance(identifier, str) else repr(identifier), node.task_generator


def _compute(node: Node, files: list[tuple[str, int, int]]) -> TaskIdentity:
    task_type = node.task_type
    identifier = node.task_identifier
    name = str(identifier) if identifier is not None else task_type
    own = hashlib.sha256(repr((task_type, identifier, node.task_generator)).encode())
    module = None
    try:
        if task_type in ("method", "ppfmethod", "class"):
            module = _add_callable(own, str(identifier), files)
        elif task_type == "generated":
            name = f"{node.task_generator}({identifier})"
            module = _add_callable(own, str(node.task_generator), files)
        elif task_type in ("script", "notebook"):
            _add_file_named(own, str(identifier), files)
    except Exception as exc:  # the user's module may raise anything as it imports
        return TaskIdentity(None, name, f"its code could not be read here ({type(exc).__name__}: {exc})")
    module_part = module.hexdigest()[:32] if module is not None else "-"
    return TaskIdentity(f"{own.hexdigest()[:32]}:{module_part}", name)


def _add_callable(own: Any, identifier: str, files: list[tuple[str, int, int]]) -> Any:
    """Add the callable's own code to ``own``; return the digest of its module."""
    from .._tasks import import_callable

    obj = inspect.unwrap(import_callable(identifier))
    module = inspect.getmodule(obj)
    own.update(repr((getattr(obj, "__module__", None), getattr(obj, "__qualname__", None))).encode())
    try:
        own.update(b"source\0" + inspect.getsource(obj).encode())
    except (OSError, TypeError):
        pass  # no Python source: its module's file says which version runs
    sha = hashlib.sha256()
    path = getattr(module, "__file__", None) if module is not None else None
    if path is None:
        sha.update(f"no file\0{sys.version}".encode())
    else:
        _add_file(sha, path, files)
    return sha


def _add_file_named(sha: Any, identifier: str, files: list[tuple[str, int, int]]) -> None:
    # A script's identifier is a file, or a command whose first word is one.
    candidate = identifier if os.path.isfile(identifier) else identifier.split(" ", 1)[0]
    if os.path.isfile(candidate):
        _add_file(sha, candidate, files)


def _add_file(sha: Any, path: str, files: list[tuple[str, int, int]]) -> None:
    """The file's bytes when it is source (``.py``, a script, a notebook); else its path, size and modification time."""
    stat = _stat(path)
    files.append(stat)
    if path.endswith((".so", ".pyd", ".dll", ".dylib")):
        sha.update(repr(stat).encode())
        return
    with open(path, "rb") as f:
        sha.update(b"file\0" + f.read())


def _stat(path: str) -> tuple[str, int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (path, -1, -1)
    return (path, st.st_size, st.st_mtime_ns)
