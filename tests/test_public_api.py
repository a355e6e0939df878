"""The public API is declared once, and `import aioflow` stays light."""

from __future__ import annotations

import json
import subprocess
import sys

import aioflow


def test_all_names_exist_and_public_names_are_listed() -> None:
    """Every name in __all__ exists, and every public attribute is in __all__."""
    for name in aioflow.__all__:
        assert hasattr(aioflow, name), name
    public = {n for n in vars(aioflow) if not n.startswith("_")}
    subpackages = set(aioflow._SUBPACKAGES)
    assert subpackages == {
        "cli",
        "events",
        "ewoks",
        "graph",
        "journal",
        "observe",
        "parallel",
        "parsl",
        "pools",
        "scheduler",
    }
    public.discard("annotations")  # from __future__ import annotations
    assert public - subpackages <= set(aioflow.__all__)


def test_reexported_classes_show_the_public_path() -> None:
    """Reprs and tracebacks show aioflow.NodeError, not the private module."""
    assert aioflow.NodeError.__module__ == "aioflow"
    assert aioflow.Graph.__module__ == "aioflow"


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter has imported once it has run ``code`` after ``import aioflow``."""
    script = f"import sys, json, aioflow\n{code}\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out))


def _run_one_node(**options: object) -> str:
    """Code that runs a one-node graph with ``options`` and checks its result."""
    return (
        "graph = {'graph': {'id': 'one'}, 'nodes': [{'id': 'a', 'task_type': 'method',"
        " 'task_identifier': 'operator.neg', 'default_inputs': [{'name': 0, 'value': 2}]}], 'links': []}\n"
        f"result = aioflow.execute_graph(graph, **{options!r})\n"
        "assert result == {'return_value': -2}, result"
    )


def test_import_loads_no_optional_library() -> None:
    """import aioflow imports none of the optional or heavy libraries."""
    modules = _modules_after("")
    for lib in (
        "uvloop",
        "yaml",
        "rich",
        "psutil",
        "gevent",
        "billiard",
        "loky",
        "dask",
        "parsl",
        "mpi4py",
        "ewokscore",
        "ewoks",
        "distributed",
        "papermill",
        "cloudpickle",
        "multiprocessing",
        "concurrent.futures.process",
    ):
        assert lib not in modules, lib


def test_a_thread_pool_execution_imports_no_multiprocessing() -> None:
    """A run on the thread pool needs no process machinery: it imports neither multiprocessing nor psutil."""
    modules = _modules_after(_run_one_node(pool_type="thread"))
    for lib in ("multiprocessing", "concurrent.futures.process", "psutil", "billiard"):
        assert lib not in modules, lib


def test_a_forked_process_pool_run_imports_no_other_start_method() -> None:
    """A run on the process pool with fork imports neither spawn's nor the fork server's machinery, nor the other pools'."""
    modules = _modules_after(_run_one_node(pool_type="process", context="fork", max_workers=1))
    for name in (
        "multiprocessing.popen_spawn_posix",
        "multiprocessing.popen_forkserver",
        "multiprocessing.pool",
        "aioflow.pools._mp_start",
        "aioflow.pools._mp_internals",
        "aioflow.pools._multiprocessing",
        "aioflow.scheduler._plan",
    ):
        assert name not in modules, name


def test_worker_lost_error_is_imported_on_first_use() -> None:
    """aioflow.WorkerLostError (a BrokenProcessPool) imports the stdlib's process module only when asked for."""
    code = (
        "import sys, pickle, aioflow\n"
        "print('concurrent.futures.process' in sys.modules)\n"
        "from aioflow._lost import WorkerLostError\n"
        "import concurrent.futures.process as p\n"
        "err = pickle.loads(pickle.dumps(aioflow.WorkerLostError('lost', pid=7)))\n"
        "print(WorkerLostError is aioflow.WorkerLostError, isinstance(err, p.BrokenProcessPool), err.pid)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True", "True", "7"]


def test_package_is_typed() -> None:
    """The package ships py.typed."""
    from importlib.resources import files

    assert files("aioflow").joinpath("py.typed").is_file()
