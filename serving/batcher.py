"""Coalesce concurrent requests into one vectorised scoring batch (no load shedding).

BentoML's adaptive batching holds requests for up to ``max_latency_ms`` and answers 503 when it
cannot keep up. Here a request that arrives while the scorer is idle is scored at once; requests
that arrive while a batch is running are scored together as the next batch. Only under
concurrent load does a batch wait, a few milliseconds at most, for as many requests as there
were clients active when one of the last 8 batches ended (the ones it answered, who will be
back, plus the ones already waiting): clients that just got their answers send their next
requests a moment apart, and scoring them one by one costs far more than the wait (a batch of
one deal costs ~60% of a batch of four). Counting the waiting ones too: with the batch size as
the target, clients split into groups that took turns (with 4 clients on a worker, every
batch held 2 requests in 3 of 6 measurements, at 9-12 ms of CPU per request instead of 6-8;
none of 6 since). The last 8, not the last one: one late client would otherwise lower the
target for good. Under load the cost of a request falls towards the per-deal cost of the batch
path; a busy service queues requests instead of refusing them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import Callable, Iterator

logger = logging.getLogger("dealrisk.serving")

RECENT_BATCHES = 8  # batches remembered for the linger target


class Arrivals:
    """How many scoring requests have been received in full but not yet queued for a batch.

    The request guard (``serving.guard``) wraps each scoring request in ``receiving()`` once its
    body is in; ``Coalescer.submit`` marks it ``queued()``. A request that is rejected before
    scoring (a 422 from parsing) stops counting when it is answered. Event-loop thread only.
    """

    def __init__(self) -> None:
        self.unqueued = 0
        self._flag: ContextVar[list[bool] | None] = ContextVar("dealrisk_unqueued", default=None)

    @contextlib.contextmanager
    def receiving(self) -> Iterator[None]:
        flag = [True]
        self.unqueued += 1
        token = self._flag.set(flag)
        try:
            yield
        finally:
            self._flag.reset(token)
            self._clear(flag)

    def queued(self) -> None:
        flag = self._flag.get()
        if flag is not None:
            self._clear(flag)

    def _clear(self, flag: list[bool]) -> None:
        if flag[0]:
            flag[0] = False
            self.unqueued -= 1


ARRIVALS = Arrivals()  # one per process: the guard and the service's coalescer share it


class Coalescer:
    """One scoring thread; everything queued while it works becomes its next batch.

    ``score_many(requests) -> list`` returns one outcome per request (an answer, or an exception
    object to hand back to that request's caller); ``max_deals`` caps the deals of one batch
    (a request bigger than that is a batch of its own); ``linger_seconds`` is the longest a
    batch waits for the requests of a busy service (0: never).
    """

    def __init__(
        self,
        score_many: Callable[[list], list],
        max_deals: int = 1000,
        on_batch: Callable[[int, int, float], None] | None = None,
        arrivals: Arrivals | None = None,
        settle_seconds: float = 0.01,
        linger_seconds: float = 0.003,
    ) -> None:
        self._score_many = score_many
        self._max_deals = max_deals
        self._on_batch = on_batch
        self._arrivals = arrivals
        self._settle_seconds = settle_seconds
        self.linger_seconds = linger_seconds
        self._pending: list[tuple[object, asyncio.Future]] = []
        self._queued = asyncio.Event()  # set by submit: a lingering batch wakes for each new request
        # Clients active at the end of each of the last few batches (answered + waiting).
        self._recent = collections.deque([1], maxlen=RECENT_BATCHES)
        self._running = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dealrisk-score")

    async def submit(self, request):
        """Score ``request`` in the next batch; returns its outcome."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((request, future))
        self._queued.set()
        if self._arrivals is not None:
            self._arrivals.queued()
        if not self._running:
            self._running = True
            loop.create_task(self._drain())
        return await future

    def _take_batch(self) -> tuple[list[tuple[object, asyncio.Future]], int]:
        """The next batch (queued requests, up to ``max_deals``) and its number of deals."""
        batch, deals = [], 0
        while self._pending:
            size = len(getattr(self._pending[0][0], "deals", ()))
            if batch and deals + size > self._max_deals:
                break
            batch.append(self._pending.pop(0))
            deals += size
        return batch, deals

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                await self._settle()
                await self._linger()
                batch, deals = self._take_batch()
                requests = [request for request, _ in batch]
                started = loop.time()
                try:
                    outcomes = await loop.run_in_executor(self._executor, self._score_many, requests)
                except Exception as exc:  # noqa: BLE001 - handed to every caller of the batch
                    outcomes = [exc] * len(batch)
                if self._on_batch is not None:
                    self._on_batch(len(requests), deals, loop.time() - started)
                for (_, future), outcome in zip(batch, outcomes):
                    if not future.done():
                        future.set_result(outcome)
                # Clients active now: those just answered (they will be back) and those waiting.
                self._recent.append(len(batch) + len(self._pending))
                # Let the answered requests write their responses before the next batch takes the
                # GIL: otherwise each socket write waits for the scoring thread's switch interval.
                for _ in range(2):
                    await asyncio.sleep(0)
        finally:
            self._running = False

    async def _linger(self) -> None:
        """Under concurrent load, wait up to ``linger_seconds`` until as many requests are queued
        as there were clients active at the end of any of the last ``RECENT_BATCHES`` batches; a
        service that served one request at a time (for that many batches) never waits."""
        target = max(self._recent)
        if not self.linger_seconds or len(self._pending) >= target:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.linger_seconds
        while len(self._pending) < target and (left := deadline - loop.time()) > 0:
            self._queued.clear()
            try:
                await asyncio.wait_for(self._queued.wait(), left)
            except asyncio.TimeoutError:
                return
            await self._settle()

    async def _settle(self) -> None:
        """Before a batch starts, let requests already received in full reach the queue.

        While a batch runs, the scoring thread holds the GIL most of the time, so requests that
        came in meanwhile are often still being parsed when it ends; without this they would
        miss the next batch and wait for the one after it. Bare event-loop turns (no sleeping),
        only while ``arrivals`` counts such requests, and at most ``settle_seconds``: nothing
        waits when the service is idle.
        """
        if self._arrivals is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settle_seconds
        while self._arrivals.unqueued > 0 and loop.time() < deadline:
            await asyncio.sleep(0)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
