"""Admission control for searches: sequences held, FIFO queue, 429 past the queue, no leaks."""

import asyncio

import pytest

from server.admission import Admission, AdmissionLimits, SearchRejected


async def hold(admission: Admission, width: int, release: asyncio.Event, log: list, name: str):
    async with admission.admit(width):
        log.append(name)
        await release.wait()


def test_defaults_come_from_the_engines_batch():
    assert AdmissionLimits.for_engine(256, None, None) == AdmissionLimits(256, 32, 128)
    assert AdmissionLimits.for_engine(4, None, None) == AdmissionLimits(4, 1, 4)
    assert AdmissionLimits.for_engine(256, 2, 0) == AdmissionLimits(256, 2, 0)


async def test_searches_wait_their_turn_and_the_queue_overflows_into_429():
    admission = Admission(AdmissionLimits(capacity=16, max_running=2, max_queued=1), retry_after_s=3)
    release, log = asyncio.Event(), []
    running = [asyncio.create_task(hold(admission, 8, release, log, name)) for name in ("a", "b")]
    await asyncio.sleep(0)
    queued = asyncio.create_task(hold(admission, 8, release, log, "c"))
    await asyncio.sleep(0)
    assert log == ["a", "b"] and len(admission.waiting) == 1
    with pytest.raises(SearchRejected) as caught:
        async with admission.admit(1):
            pass
    assert caught.value.retry_after_s == 3 and caught.value.http_status == 429
    assert "2 running and 1 waiting" in caught.value.message
    release.set()
    await asyncio.gather(*running, queued)
    assert log == ["a", "b", "c"] and (admission.running, admission.held, len(admission.waiting)) == (0, 0, 0)


async def test_wide_searches_share_the_engines_sequences_first_come_first_served():
    admission = Admission(AdmissionLimits(capacity=16, max_running=10, max_queued=10))
    release, log = asyncio.Event(), []
    first = asyncio.create_task(hold(admission, 12, release, log, "wide"))
    await asyncio.sleep(0)
    second = asyncio.create_task(hold(admission, 8, release, log, "too wide to fit"))
    third = asyncio.create_task(hold(admission, 2, release, log, "narrow, but behind"))
    await asyncio.sleep(0)
    assert log == ["wide"] and admission.held == 12
    release.set()
    await asyncio.gather(first, second, third)
    assert log == ["wide", "too wide to fit", "narrow, but behind"]
    # A search wider than the whole batch still runs, alone.
    async with admission.admit(100):
        assert admission.held == 16


async def test_a_client_that_leaves_while_queued_gives_its_place_back():
    admission = Admission(AdmissionLimits(capacity=8, max_running=1, max_queued=4))
    release, log = asyncio.Event(), []
    running = asyncio.create_task(hold(admission, 1, release, log, "running"))
    await asyncio.sleep(0)
    leaving = asyncio.create_task(hold(admission, 1, release, log, "leaving"))
    await asyncio.sleep(0)
    assert len(admission.waiting) == 1
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert len(admission.waiting) == 0
    release.set()
    await running
    assert log == ["running"] and (admission.running, admission.held) == (0, 0)


async def test_a_closed_admission_answers_503_to_waiting_and_new_searches():
    admission = Admission(AdmissionLimits(capacity=8, max_running=1, max_queued=4), retry_after_s=2)
    release, log = asyncio.Event(), []
    running = asyncio.create_task(hold(admission, 1, release, log, "running"))
    await asyncio.sleep(0)
    waiting = asyncio.create_task(hold(admission, 1, release, log, "waiting"))
    await asyncio.sleep(0)
    admission.close()
    with pytest.raises(SearchRejected) as caught:
        await waiting
    assert caught.value.http_status == 503 and caught.value.retry_after_s == 2
    with pytest.raises(SearchRejected):
        async with admission.admit(1):
            pass
    assert not admission.idle.is_set()
    release.set()
    await running
    assert admission.idle.is_set() and log == ["running"]


async def test_drain_cuts_a_running_search_which_answers_with_what_it_has():
    """SIGTERM with vLLM's default --shutdown-timeout 0: the running search's hanging engine call
    is cut at once and the search still answers, from the samples it already has."""
    from search import self_consistency
    from search.self_consistency import SelfConsistencyParams
    from server.plugin import DeliberateState
    from server.search_service import SHUTTING_DOWN, SearchService
    from tests.unit.scripted import SecondCallHangs, search_context

    generator = SecondCallHangs()
    ctx = search_context(generator)
    service = SearchService(generator=None, tree_store=None)
    admission = Admission(AdmissionLimits(capacity=8, max_running=2, max_queued=2))
    deliberate = DeliberateState(service, admission, "model", {}, None, None, None)

    async def search():
        async with admission.admit(2):
            service.running_budgets.add(ctx.generator.budget)
            try:
                return await self_consistency.run(ctx, SelfConsistencyParams(n=6, adaptive=True, batch_size=2,
                                                                              include_greedy=False))
            finally:
                service.running_budgets.discard(ctx.generator.budget)

    running = asyncio.create_task(search())
    while generator.answered:
        await asyncio.sleep(0.01)
    await deliberate.drain(0)
    assert running.done() and admission.idle.is_set()
    result = running.result()
    assert result.truncated and result.chosen.answer == "7"
    assert [step["reason"] for step in result.trace if step["step"] == "truncated"] == [SHUTTING_DOWN]
