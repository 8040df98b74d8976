"""serving/admission.py: a replica's own queue: working places, waiting places, refusal at once."""

import asyncio

import pytest

from serving.admission import Admission, QueueFull


async def hold(admission: Admission, release: asyncio.Event, entered: list[int], i: int) -> None:
    async with admission.place():
        entered.append(i)
        await release.wait()


def test_places_fill_then_the_queue_then_the_next_is_refused_at_once_and_waiters_go_in_order():
    async def scenario():
        admission, release, entered = Admission(working=2, waiting=1), asyncio.Event(), []
        tasks = [asyncio.create_task(hold(admission, release, entered, i)) for i in range(3)]
        await asyncio.sleep(0)
        assert entered == [0, 1] and admission.stats() == {"working": 2, "waiting": 1, "refused": 0,
                                                            "max_working": 2, "max_waiting": 1}
        with pytest.raises(QueueFull):
            async with admission.place():
                pass
        assert admission.stats()["refused"] == 1
        release.set()
        await asyncio.gather(*tasks)
        assert entered == [0, 1, 2] and (admission.stats()["working"], admission.stats()["waiting"]) == (0, 0)

    asyncio.run(scenario())


def test_a_waiter_cancelled_leaves_the_queue_and_a_failed_generation_frees_its_place():
    async def scenario():
        admission, release, entered = Admission(working=1, waiting=1), asyncio.Event(), []
        first = asyncio.create_task(hold(admission, release, entered, 0))
        waiter = asyncio.create_task(hold(admission, release, entered, 1))
        await asyncio.sleep(0)
        waiter.cancel()  # a client gone while its request waited
        await asyncio.gather(waiter, return_exceptions=True)
        assert admission.stats()["waiting"] == 0
        with pytest.raises(RuntimeError):  # the queue has room again: it waits, then its generation fails
            async with asyncio.timeout(1):
                release.set()
                async with admission.place():
                    raise RuntimeError("engine error")
        await first
        assert (admission.stats()["working"], admission.stats()["waiting"]) == (0, 0)
        async with admission.place():  # the place was given back
            assert admission.stats()["working"] == 1

    asyncio.run(scenario())


def test_no_queue_refuses_as_soon_as_every_place_is_taken():
    async def scenario():
        admission, release = Admission(working=1, waiting=0), asyncio.Event()
        task = asyncio.create_task(hold(admission, release, [], 0))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            async with admission.place():
                pass
        release.set()
        await task

    asyncio.run(scenario())


@pytest.mark.parametrize(("working", "waiting"), [(0, 1), (1, -1)])
def test_impossible_sizes_are_refused(working, waiting):
    with pytest.raises(ValueError, match="working >= 1"):
        Admission(working, waiting)
