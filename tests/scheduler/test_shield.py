"""`shielded`: cleanup runs to its end whatever cancels the awaiting task, and no cancellation is lost."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import anyio
import pytest

from aioflow.scheduler._shield import shielded


async def cleanup(steps: list[str], seconds: float = 0.2, fail: BaseException | None = None) -> str:
    steps.append("started")
    await asyncio.sleep(seconds)
    steps.append("finished")
    if fail is not None:
        raise fail
    return "done"


async def test_returns_what_the_coroutine_returns() -> None:
    steps: list[str] = []
    assert await shielded(cleanup(steps, 0)) == "done"
    assert steps == ["started", "finished"]


async def test_raises_what_the_coroutine_raises() -> None:
    with pytest.raises(ValueError, match="broken"):
        await shielded(cleanup([], 0, ValueError("broken")))


async def test_a_cancellation_waits_for_the_end_then_is_raised() -> None:
    """Cancelled (three times) while the cleanup runs: the cleanup finishes, then CancelledError."""
    steps: list[str] = []
    task = asyncio.create_task(shielded(cleanup(steps)))
    await asyncio.sleep(0.05)
    for _ in range(3):
        task.cancel()
        await asyncio.sleep(0.01)
    assert not task.done()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert steps == ["started", "finished"]


async def test_an_enclosing_asyncio_timeout_still_fires_after_the_cleanup() -> None:
    steps: list[str] = []
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await shielded(cleanup(steps))
    assert steps == ["started", "finished"]


async def test_an_anyio_cancel_scope_is_honoured_after_the_cleanup() -> None:
    """anyio repeats its cancellation until the task leaves the scope: every repeat is absorbed."""
    steps: list[str] = []
    with anyio.move_on_after(0.05) as scope:
        await shielded(cleanup(steps))
        steps.append("after the cleanup")  # not reached: the scope's cancellation is raised first
    assert scope.cancelled_caught
    assert steps == ["started", "finished"]


async def test_a_cancellation_keeps_the_cleanups_error_as_its_context() -> None:
    task = asyncio.create_task(shielded(cleanup([], 0.1, ValueError("broken"))))
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError) as info:
        await task
    assert isinstance(info.value.__context__, ValueError)


def test_a_keyboard_interrupt_from_the_cleanup_wins_over_a_cancellation() -> None:
    """The caller's KeyboardInterrupt handler (finish the stop synchronously) runs, though the caller was cancelled.

    A KeyboardInterrupt raised in a task leaves the event loop, as in any
    asyncio program: the scenario runs in an interpreter of its own.
    """
    script = textwrap.dedent(
        """
        import asyncio
        from aioflow.scheduler._shield import shielded

        async def interrupted():
            await asyncio.sleep(0.1)
            raise KeyboardInterrupt

        async def caller():
            try:
                await shielded(interrupted())
            except KeyboardInterrupt:
                print("handled", flush=True)
                raise

        async def main():
            task = asyncio.create_task(caller())
            await asyncio.sleep(0.02)
            task.cancel()
            await task

        asyncio.run(main())
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.stdout == "handled\n"
    assert "\nKeyboardInterrupt\n" in done.stderr  # raised out of asyncio.run
