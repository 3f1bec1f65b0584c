"""stop_tasks ends a loop even when a cancel is lost, as Python 3.11's wait_for loses one."""

from __future__ import annotations

import asyncio

from common.tasks import stop_task, stop_tasks


async def test_a_lost_cancel_is_sent_again() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:  # what a wait_for racing its inner result does
                swallowed += 1
                if swallowed >= 3:
                    raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0.02)
    await stop_task(task)
    assert task.cancelled() and swallowed == 3


async def test_failed_and_finished_tasks_do_not_raise() -> None:
    async def fail() -> None:
        raise ConnectionError("peer went away")

    failed = asyncio.create_task(fail())
    done = asyncio.create_task(asyncio.sleep(0))
    await asyncio.sleep(0.01)
    await stop_tasks([failed, done, None])
    assert failed.done() and done.done()


async def test_gives_up_after_the_timeout() -> None:
    alive = True

    async def immortal() -> None:
        while alive:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                pass

    task = asyncio.create_task(immortal())
    await asyncio.sleep(0.02)
    await stop_task(task, timeout_s=0.2)
    assert not task.done()
    alive = False
    await task
