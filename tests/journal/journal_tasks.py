"""Tasks for the journal tests: each run of one is logged as a line ``node:execution`` in a file, by one write."""

from __future__ import annotations

import os
import time


def _log(log: str, node: str, number: int) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{node}:{number}\n".encode())  # one short write to an O_APPEND file: never interleaved
    finally:
        os.close(fd)


def step(log: str, node: str, x: int = 0, y: int = 0, pause: float = 0.0) -> int:
    """Log the run (its execution number is its x for loop nodes, else 1), then return x + y + 1."""
    time.sleep(pause)
    _log(log, node, 1)
    return x + y + 1


def count(log: str, node: str, n: int = 0, pause: float = 0.0, **_: object) -> dict[str, object]:
    """A loop body (a ``ppfmethod``): log run number n + 1, return n + 1 and whether to go on (below 5)."""
    time.sleep(pause)
    _log(log, node, n + 1)
    return {"n": n + 1, "more": n + 1 < 5}


def fail_once(log: str, node: str, flag: str, x: int = 0) -> int:
    """Fail unless the file ``flag`` exists: the run of a graph that a fix lets resume."""
    _log(log, node, 1)
    if not os.path.exists(flag):
        msg = "the flag is not set"
        raise RuntimeError(msg)
    return x + 100


def broken(log: str, node: str, x: int = 0) -> int:
    """Always fails (its on_error link leads to a handler)."""
    _log(log, node, 1)
    msg = f"broken at {x}"
    raise ValueError(msg)


def handle(log: str, node: str, **error: object) -> str:
    """A default error handler: it gets the failed node's error data."""
    _log(log, node, 1)
    return "handled" if error else "no error?"


def _node(nid: str, func: str, log: str, task_type: str = "method", **inputs: object) -> dict[str, object]:
    defaults: list[dict[str, object]] = [{"name": "log", "value": log}, {"name": "node", "value": nid}]
    defaults += [{"name": k, "value": v} for k, v in inputs.items()]
    return {"id": nid, "task_type": task_type, "task_identifier": f"journal_tasks.{func}", "default_inputs": defaults}


def _map(source: str, target: str, pairs: dict[str, str], **extra: object) -> dict[str, object]:
    mapping = [{"source_output": out, "target_input": name} for out, name in pairs.items()]
    return {"source": source, "target": target, "data_mapping": mapping, **extra}


def fixable_graph(log: str, flag: str, *, third: bool = True) -> dict[str, object]:
    """a -> b -> c, where b fails until the file ``flag`` exists (``third=False``: without c)."""
    nodes = [_node("a", "step", log, x=1), _node("b", "fail_once", log, flag=flag)]
    links = [_map("a", "b", {"return_value": "x"})]
    if third:
        nodes.append(_node("c", "step", log))
        links.append(_map("b", "c", {"return_value": "x"}))
    return {"graph": {"id": "fixable"}, "nodes": nodes, "links": links}


def finished_firings(path: str | os.PathLike[str], run_id: str) -> int:
    """How many firings of run ``run_id`` the journal at ``path`` has as finished (0: no such run, or no journal yet)."""
    from aioflow.journal import JournalError, list_runs

    try:
        runs = {r.run_id: r for r in list_runs(path)}
    except JournalError:
        return 0
    return runs[run_id].finished if run_id in runs else 0


def without_log(results: object, log: object) -> object:
    """Results with the log's path (which the loop's outputs carry along) as ``"LOG"``, to compare two runs."""
    if isinstance(results, dict):
        return {k: without_log(v, log) for k, v in results.items()}
    return "LOG" if results == str(log) else results


def big_graph(log: str, *, stages: int = 10, width: int = 100, pause: float = 0.002) -> dict[str, object]:
    """``stages`` x ``width`` branches (each node takes the one before it on its branch), a loop of 5
    iterations, and a node that fails into its error handler: ``stages * width + 4`` nodes."""
    nodes = [
        _node(f"s{k}_{i}", "step", log, x=i, pause=pause) if k == 0 else _node(f"s{k}_{i}", "step", log, pause=pause)
        for k in range(stages)
        for i in range(width)
    ]
    links = [_map(f"s{k - 1}_{i}", f"s{k}_{i}", {"return_value": "x"}) for k in range(1, stages) for i in range(width)]
    nodes += [
        _node("seed", "step", log, x=-1),
        _node("loop", "count", log, task_type="ppfmethod", pause=pause),
        _node("bad", "broken", log, x=7),
        _node("handler", "handle", log),
    ]
    links += [
        _map("seed", "loop", {"return_value": "n"}),
        {
            "source": "loop",
            "target": "loop",
            "map_all_data": True,
            "conditions": [{"source_output": "more", "value": True}],
        },
        {"source": "bad", "target": "handler", "on_error": True, "map_all_data": True},
    ]
    return {"graph": {"id": "big"}, "nodes": nodes, "links": links}
