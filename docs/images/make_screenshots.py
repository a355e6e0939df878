"""Make docs/images/ui.png: the live web view of a finished run, one node failed, its panel open.

Not a test: it documents how the picture in docs/observe.md was made. It
runs a 15-node graph with ``aioflow run --ui`` (its tasks in
tests/ui_tasks.py), with stderr on a pseudo-terminal so that the view stays
up after the run; opens the page in headless Chromium (Debian's
``chromium`` and ``chromium-driver``, as the tests use), clicks the failed
node and takes the screenshot. Run from the repository's root::

    python docs/images/make_screenshots.py
"""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
sys.path[:0] = [str(TESTS), str(TESTS / "observe")]

# The tests' helpers, from the directories just put on the path.
from test_ui import chromium, run_state, wait_for_element

OUTPUT = Path(__file__).resolve().parent / "ui.png"
WIDTH, HEIGHT = 1400, 820


def node(node_id: str, label: str, seconds: float, task: str = "ui_tasks.pause") -> dict[str, Any]:
    return {
        "id": node_id,
        "label": label,
        "task_type": "method",
        "task_identifier": task,
        "default_inputs": [{"name": "seconds", "value": seconds}],
    }


def link(source: str, target: str, **attrs: Any) -> dict[str, Any]:
    return {"source": source, "target": target, **attrs}


GRAPH = {
    "graph": {"id": "xrd_reduction", "label": "Powder XRD reduction"},
    "nodes": [
        node("load", "load frames", 0.4),
        node("dark", "dark current", 0.3),
        node("flat", "flat field", 0.35),
        node("mask", "mask detector gaps", 0.25),
        *(node(f"sector{i}", f"integrate sector {i}", 0.3 + 0.1 * i) for i in range(1, 5)),
        node("merge", "merge sectors", 0.3),
        node("background", "subtract background", 0.4),
        node("fit", "fit peaks", 0.6, task="ui_tasks.fit_peaks"),
        node("notify", "notify beamline", 0.2),
        node("refine", "refine lattice", 0.5),
        node("report", "write report", 0.3),
        node("save", "save to HDF5", 0.5),
    ],
    "links": [
        link("load", "dark"),
        link("load", "flat"),
        link("dark", "mask"),
        link("flat", "mask"),
        *(link("mask", f"sector{i}") for i in range(1, 5)),
        *(link(f"sector{i}", "merge") for i in range(1, 5)),
        link("merge", "background"),
        link("merge", "save"),
        link("background", "fit"),
        link("fit", "notify", on_error=True),
        link("fit", "refine", conditions=[{"source_output": "return_value", "value": "converged"}]),
        link("refine", "report"),
    ],
}


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / "pipeline.json").write_text(json.dumps(GRAPH), encoding="utf-8")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
        master, slave = pty.openpty()
        argv = [sys.executable, "-m", "aioflow", "run", "pipeline.json", "--pool", "process", "--max-workers", "4"]
        proc = subprocess.Popen(
            [*argv, "--ui"], cwd=directory, env=env, stdout=subprocess.DEVNULL, stderr=slave, start_new_session=True
        )
        os.close(slave)
        try:
            said = b""
            while (found := re.search(rb"live view at (\S+)", said)) is None:
                said += os.read(master, 4096)
            url = found.group(1).decode()
            with chromium(WIDTH, HEIGHT) as browser:
                browser.get(url)
                wait_for_element(browser, '[data-node-id="fit"]')
                deadline = time.monotonic() + 60
                while run_state(browser) == "running":
                    assert time.monotonic() < deadline, "the run did not end"
                    time.sleep(0.1)
                wait_for_element(browser, '[data-node-id="fit"][data-state="failed"]').click()
                time.sleep(0.5)  # the colour transitions of the boxes
                browser.save_screenshot(str(OUTPUT))
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
            os.close(master)
    print(f"wrote {OUTPUT}")  # noqa: T201 - a script's report


if __name__ == "__main__":
    main()
