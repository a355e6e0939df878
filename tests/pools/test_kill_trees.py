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


WAIT_SCRIPT = textwrap.dedent(
    """
    import multiprocessing, os, signal, sys, time
    from aioflow.pools import _lifecycle

    if sys.argv[1] == "proc":  # a system without pidfds: /proc is looked at instead
        del os.pidfd_open
    ctx = multiprocessing.get_context("fork")
    killed = ctx.Process(target=time.sleep, args=(60,))
    ending = ctx.Process(target=time.sleep, args=(0.3,))
    reaped = ctx.Process(target=time.sleep, args=(0,))
    for p in (killed, ending, reaped):
        p.start()
    reaped.join()
    t0 = time.monotonic()
    os.kill(killed.pid, signal.SIGKILL)
    _lifecycle._wait_exited([killed.pid, reaped.pid, ending.pid])
    waited = time.monotonic() - t0
    states = [_lifecycle._stat_fields(p.pid)[0].decode() for p in (killed, ending)]
    killed.join(5)
    ending.join(5)
    print(waited >= 0.25, waited < 5, states, killed.exitcode, ending.exitcode)
    """
)


@pytest.mark.parametrize("how", ["pidfd", "proc"])
def test_waiting_for_children_to_exit_leaves_them_to_their_owner(how: str) -> None:
    """`_wait_exited` returns once each child has exited (a zombie), reaping none; a child reaped already is skipped."""
    done = subprocess.run(
        [sys.executable, "-c", WAIT_SCRIPT, how], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True True ['Z', 'Z'] -9 0"
