"""Several requests scored as one batch give each request the answer it would get alone."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import threading
import time

import pytest

from serving.batcher import RECENT_BATCHES, Arrivals, Coalescer
from serving.schemas import EXAMPLE_REQUEST, ScoreRequest
from serving.scoring import RequestError, score_request, score_requests
from tests.serving.test_service import assert_same_answer


def parsed(body: dict) -> ScoreRequest:
    return ScoreRequest.model_validate(copy.deepcopy(body))


class Numbered(int):
    """A stand-in request of one deal whose answer is its number times ten."""

    deals = (1,)


def recording_scorer(seconds: float = 0.0):
    """A ``score_many`` that takes ``seconds`` and records each batch; returns (batches, score_many)."""
    batches: list[list[int]] = []

    def score_many(requests):
        if seconds:
            time.sleep(seconds)
        batches.append(list(requests))
        return [n * 10 for n in requests]

    return batches, score_many


async def submit_later(coalescer: Coalescer, n: int, delay: float):
    await asyncio.sleep(delay)
    return await coalescer.submit(Numbered(n))


def test_merged_batch_equals_requests_alone(loaded_model, open_request, monkeypatch):
    first = {"as_of": open_request["as_of"], "deals": open_request["deals"][:2]}
    second = {"as_of": "2026-06-30T00:00:00Z", "deals": copy.deepcopy(EXAMPLE_REQUEST["deals"])}
    same_ids = {"as_of": open_request["as_of"], "deals": open_request["deals"][:1]}  # ids shared with `first`
    requests = [parsed(first), parsed(second), parsed(same_ids)]
    alone = [score_request(loaded_model, request) for request in requests]
    import serving.scoring

    def no_fallback(*args):
        raise AssertionError("the merged batch fell back to one request at a time")

    monkeypatch.setattr(serving.scoring, "_answer_or_error", no_fallback)
    together = score_requests(loaded_model, requests)
    for answer, expected in zip(together, alone):
        assert_same_answer(answer, expected)


def test_a_bad_request_in_a_batch_gets_its_own_error(loaded_model, open_request):
    good = parsed({"as_of": open_request["as_of"], "deals": open_request["deals"][:1]})
    bad_body = copy.deepcopy(EXAMPLE_REQUEST)
    bad_body["deals"][0]["contacts"][0]["role"] = "janitor"
    late_body = copy.deepcopy(EXAMPLE_REQUEST)
    late_body["deals"][0]["activities"][0]["occurred_at"] = "2026-07-02T00:00:00Z"
    outcomes = score_requests(loaded_model, [good, parsed(bad_body), parsed(late_body)])
    assert_same_answer(outcomes[0], score_request(loaded_model, good))
    assert isinstance(outcomes[1], RequestError) and outcomes[1].status == 422
    assert outcomes[1].problems[0].field == "deals[0].contacts[0].role"
    assert isinstance(outcomes[2], RequestError)
    assert outcomes[2].problems[0].field == "deals[0].activities[0].occurred_at"


def test_coalescer_batches_what_arrives_while_busy_and_routes_answers():
    release = threading.Event()
    batches: list[list[int]] = []

    def score_many(requests):
        if not batches:
            release.wait(5)  # hold the first batch so the others queue up behind it
        batches.append(list(requests))
        return [n * 10 if n >= 0 else ValueError("negative") for n in requests]

    class Request(int):
        deals = (1,)

    async def run():
        coalescer = Coalescer(score_many, max_deals=3)
        first = asyncio.ensure_future(coalescer.submit(Request(0)))
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(coalescer.submit(Request(n))) for n in (1, 2, 3, -4)]
        await asyncio.sleep(0.05)
        release.set()
        results = await asyncio.gather(first, *rest)
        coalescer.close()
        return results

    results = asyncio.run(run())
    assert results[:4] == [0, 10, 20, 30]
    assert isinstance(results[4], ValueError)
    assert batches == [[0], [1, 2, 3], [-4]]  # queued requests go together, up to max_deals


def test_coalescer_hands_a_crash_to_every_caller_of_the_batch():
    def score_many(requests):
        raise RuntimeError("boom")

    class Request(int):
        deals = (1,)

    async def run():
        coalescer = Coalescer(score_many)
        outcome = await coalescer.submit(Request(1))
        coalescer.close()
        return outcome

    outcome = asyncio.run(run())
    assert isinstance(outcome, RuntimeError)


def test_concurrent_http_requests_each_get_their_own_answer(client, open_request):
    from concurrent.futures import ThreadPoolExecutor

    bodies = [{"as_of": open_request["as_of"], "deals": [deal]} for deal in open_request["deals"]]
    bad = copy.deepcopy(bodies[0])
    bad["deals"][0]["stage"] = "daydreaming"
    bodies.append(bad)
    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        responses = list(pool.map(lambda b: client.post("/score", json=b), bodies * 2))
    for body, response in zip(bodies * 2, responses):
        if body is bad:
            assert response.status_code == 422
            assert "deals[0].stage" in response.text
        else:
            assert response.status_code == 200, response.text
            assert response.json()["deals"][0]["deal_id"] == body["deals"][0]["deal_id"]


@pytest.mark.parametrize("n", [1, 3])
def test_single_request_path_is_unchanged(loaded_model, open_request, n):
    request = parsed({"as_of": open_request["as_of"], "deals": open_request["deals"][:n]})
    assert_same_answer(score_requests(loaded_model, [request])[0], score_request(loaded_model, request))


def test_coalescer_lets_requests_already_received_join_the_batch():
    batches, score_many = recording_scorer()

    class Request(int):
        deals = (1,)

    async def run(arrivals):
        coalescer = Coalescer(score_many, arrivals=arrivals)

        async def client(n: int, parsing_turns: int):
            with arrivals.receiving() if arrivals else contextlib.nullcontext():
                for _ in range(parsing_turns):  # body received, still being parsed
                    await asyncio.sleep(0)
                return await coalescer.submit(Request(n))

        results = await asyncio.gather(client(0, 0), client(1, 3), client(2, 6))
        coalescer.close()
        return results

    arrivals = Arrivals()
    assert asyncio.run(run(arrivals)) == [0, 10, 20]
    assert batches == [[0, 1, 2]]
    assert arrivals.unqueued == 0
    batches.clear()
    assert asyncio.run(run(None)) == [0, 10, 20]
    assert batches[0] == [0]  # without the count, the first batch leaves at once


def test_under_load_a_batch_waits_for_the_clients_of_the_last_one():
    batches, score_many = recording_scorer()

    async def run(linger: float):
        coalescer = Coalescer(score_many, linger_seconds=linger)
        # A busy moment: three requests queued together are one batch ...
        assert await asyncio.gather(*(coalescer.submit(Numbered(n)) for n in range(3))) == [0, 10, 20]

        # ... and their clients come back a few milliseconds apart.
        results = await asyncio.gather(
            submit_later(coalescer, 3, 0), submit_later(coalescer, 4, 0.005), submit_later(coalescer, 5, 0.01)
        )
        coalescer.close()
        return results

    assert asyncio.run(run(linger=5.0)) == [30, 40, 50]
    assert batches == [[0, 1, 2], [3, 4, 5]]  # waited for all three, not for the 5 s
    batches.clear()
    assert asyncio.run(run(linger=0)) == [30, 40, 50]
    assert batches[1] == [3]  # without lingering the first to come back is scored alone


def test_one_small_batch_does_not_shrink_the_batches_of_a_busy_service():
    batches, score_many = recording_scorer()

    async def run():
        coalescer = Coalescer(score_many, linger_seconds=0.05)

        await asyncio.gather(*(coalescer.submit(Numbered(n)) for n in range(3)))
        # One client is slow this time: the batch goes without it once the linger is over ...
        await asyncio.gather(
            submit_later(coalescer, 3, 0), submit_later(coalescer, 4, 0.005), submit_later(coalescer, 5, 0.3)
        )
        # ... and the next round, all three back a few ms apart, is still scored as one batch.
        await asyncio.gather(
            submit_later(coalescer, 6, 0), submit_later(coalescer, 7, 0.005), submit_later(coalescer, 8, 0.01)
        )
        coalescer.close()

    asyncio.run(run())
    assert batches == [[0, 1, 2], [3, 4], [5], [6, 7, 8]]


def test_two_groups_of_clients_that_take_turns_are_merged_into_one_batch():
    batches, score_many = recording_scorer(0.02)  # a batch takes a while: the 2nd group arrives meanwhile

    async def run():
        coalescer = Coalescer(score_many, linger_seconds=0.05)

        async def client(n: int, start: float, again: int):
            await asyncio.sleep(start)
            await coalescer.submit(Numbered(n))
            await asyncio.sleep(0.002)  # back a moment after its answer
            return await coalescer.submit(Numbered(again))

        await asyncio.gather(client(0, 0, 10), client(1, 0, 11), client(2, 0.005, 12), client(3, 0.005, 13))
        coalescer.close()

    asyncio.run(run())
    # Four clients were active when the first batch ended (two answered, two waiting): the next
    # batch waits for the answered two instead of leaving the groups to alternate in pairs.
    assert batches[:2] == [[0, 1], [2, 3, 10, 11]]


def test_an_idle_service_never_lingers():
    batches, score_many = recording_scorer()

    async def run():
        coalescer = Coalescer(score_many, linger_seconds=60.0)
        # One request at a time: each is scored at once (a linger would hold it for a minute).
        answers = [await asyncio.wait_for(coalescer.submit(Numbered(n)), timeout=10) for n in range(3)]
        # After a batch of two, lone requests wait at most the linger while that batch is among
        # the last RECENT_BATCHES; then load counts as gone.
        await asyncio.gather(coalescer.submit(Numbered(3)), coalescer.submit(Numbered(4)))
        coalescer.linger_seconds = 0.05
        lone = range(5, 5 + RECENT_BATCHES)
        started = time.perf_counter()
        answers += [await asyncio.wait_for(coalescer.submit(Numbered(n)), timeout=10) for n in lone]
        waited = time.perf_counter() - started
        coalescer.linger_seconds = 60.0
        answers.append(await asyncio.wait_for(coalescer.submit(Numbered(99)), timeout=10))
        coalescer.close()
        return answers, waited

    answers, waited = asyncio.run(run())
    assert answers == [0, 10, 20, *(10 * n for n in range(5, 5 + RECENT_BATCHES)), 990]
    assert batches == [[0], [1], [2], [3, 4], *([n] for n in range(5, 5 + RECENT_BATCHES)), [99]]
    assert waited >= 0.05 * RECENT_BATCHES  # each lone request did wait out the linger


def test_arrivals_forget_a_request_answered_without_scoring():
    arrivals = Arrivals()

    async def rejected():
        with arrivals.receiving():
            assert arrivals.unqueued == 1  # e.g. a 422 from parsing: never queued

    asyncio.run(rejected())
    assert arrivals.unqueued == 0
