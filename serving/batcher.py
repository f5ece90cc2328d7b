"""Coalesce concurrent requests into one vectorised scoring batch (no waiting, no load shedding).

BentoML's adaptive batching holds requests for up to ``max_latency_ms`` and answers 503 when it
cannot keep up. Here nothing waits on purpose: a request that arrives while the scorer is idle is
scored at once; requests that arrive while a batch is running are scored together as the next
batch. Under load the cost of a request falls towards the per-deal cost of the batch path; a
busy service queues requests instead of refusing them.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

logger = logging.getLogger("dealrisk.serving")


class Coalescer:
    """One scoring thread; everything queued while it works becomes its next batch.

    ``score_many(requests) -> list`` returns one outcome per request (an answer, or an exception
    object to hand back to that request's caller); ``max_deals`` caps the deals of one batch
    (a request bigger than that is a batch of its own).
    """

    def __init__(self, score_many: Callable[[list], list], max_deals: int = 1000) -> None:
        self._score_many = score_many
        self._max_deals = max_deals
        self._pending: list[tuple[object, asyncio.Future]] = []
        self._running = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dealrisk-score")

    async def submit(self, request):
        """Score ``request`` in the next batch; returns its outcome."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((request, future))
        if not self._running:
            self._running = True
            loop.create_task(self._drain())
        return await future

    def _take_batch(self) -> list[tuple[object, asyncio.Future]]:
        batch, deals = [], 0
        while self._pending:
            size = len(getattr(self._pending[0][0], "deals", ()))
            if batch and deals + size > self._max_deals:
                break
            batch.append(self._pending.pop(0))
            deals += size
        return batch

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch = self._take_batch()
                requests = [request for request, _ in batch]
                try:
                    outcomes = await loop.run_in_executor(self._executor, self._score_many, requests)
                except Exception as exc:  # noqa: BLE001 - handed to every caller of the batch
                    outcomes = [exc] * len(batch)
                for (_, future), outcome in zip(batch, outcomes):
                    if not future.done():
                        future.set_result(outcome)
        finally:
            self._running = False

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
