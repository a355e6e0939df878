"""Importing aioflow.parallel stays light: no MPI_Init, no loky, no cloudpickle until used."""

from __future__ import annotations

import json
import subprocess
import sys


def _modules_after(code: str) -> set[str]:
    script = f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60).stdout
    return set(json.loads(out))


def test_import_aioflow_does_not_import_parallel() -> None:
    """import aioflow leaves aioflow.parallel alone."""
    assert "aioflow.parallel" not in _modules_after("import aioflow")


def test_import_parallel_imports_no_optional_library() -> None:
    """import aioflow.parallel imports neither mpi4py (so no MPI_Init), loky nor cloudpickle."""
    modules = _modules_after("import aioflow.parallel")
    for lib in ("mpi4py", "mpi4py.MPI", "loky", "cloudpickle"):
        assert lib not in modules, lib


def test_rank_and_size_without_mpi() -> None:
    """Outside an MPI job: rank 0, size 1, the master; mpi4py's MPI is not imported to find out."""
    code = (
        "import aioflow.parallel as p\n"
        "print(json.dumps([p.get_rank(), p.get_size(), p.is_master_process()]))\n"
        "print(json.dumps('mpi4py.MPI' in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", f"import sys, json\n{code}"], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split("\n")
    assert json.loads(out[0]) == [0, 1, True]
    assert json.loads(out[1]) is False
