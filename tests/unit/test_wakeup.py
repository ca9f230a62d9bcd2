"""The wake-up signal and the answer collector the delivery loops and the webhook sender wait on."""

from __future__ import annotations

import asyncio
import time

from meridian.concurrency.wakeup import Wakeup
from meridian.embedded.pubsub.push import Answers


def test_a_wakeup_returns_at_once_when_set_when_set_meanwhile_or_after_the_timeout() -> None:
    async def scenario() -> None:
        wake = Wakeup()
        wake.set()
        started = time.monotonic()
        await wake.wait(10)  # already set
        wake.clear()
        asyncio.get_running_loop().call_later(0.05, wake.set)
        await wake.wait(10)  # set while waiting
        wake.clear()
        await wake.wait(0.05)  # nobody sets it: the timeout
        assert time.monotonic() - started < 1

    asyncio.run(scenario())


def test_answers_are_collected_once_each_as_they_finish() -> None:
    async def scenario() -> None:
        answers = Answers()

        async def answer(after: float) -> bool:
            await asyncio.sleep(after)
            return True

        requests = [asyncio.create_task(answer(d)) for d in (0.01, 0.01, 0.2)]
        for request in requests:
            answers.track(request)
        assert await answers.wait(0) == []  # none yet, and no waiting
        first = await answers.wait(None)
        await asyncio.sleep(0.02)
        first += await answers.wait(0)
        assert set(first) == set(requests[:2])
        assert await answers.wait(0.01) == []  # the slow one has not answered yet
        assert await answers.wait(None) == [requests[2]]

    asyncio.run(scenario())
