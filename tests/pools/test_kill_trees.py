"""`kill_process_trees`: a childless child of ours is killed without psutil; a tree is still killed whole."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import multiprocessing, os, subprocess, sys, time
    from aioflow.pools._lifecycle import kill_process_trees

    def worker(queue, with_grandchild):
        if with_grandchild:
            queue.put(subprocess.Popen(["sleep", "60"]).pid)
        else:
            queue.put(None)
        time.sleep(60)

    if __name__ == "__main__":
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=worker, args=(queue, sys.argv[1] == "tree"))
        child.start()
        grandchild = queue.get(timeout=30)
        time.sleep(0.1)  # the grandchild is listed under the child by now
        kill_process_trees([child.pid])
        child.join(10)
        print("psutil" in sys.modules, child.exitcode)
        if grandchild is not None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    with open(f"/proc/{grandchild}/stat") as f:
                        if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                            break
                except FileNotFoundError:
                    break
                time.sleep(0.01)
            else:
                print("grandchild alive")
                os.kill(grandchild, 9)
    """
)


@pytest.mark.parametrize(("shape", "expected"), [("alone", "False -9"), ("tree", "True -9")])
def test_a_childless_child_is_killed_without_psutil_and_a_tree_with_it(shape: str, expected: str) -> None:
    """On Linux (these tests run there): elsewhere the fast path declines and psutil always kills."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, shape], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == expected
    assert "grandchild alive" not in done.stdout
