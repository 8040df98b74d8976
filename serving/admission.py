"""A replica's own request queue in front of its model: at most ``working`` generations at once, at most
``waiting`` more waiting for a place, and the rest refused at once. Pure asyncio: no Ray.

An arm served alone runs its model inside the ingress replica, which also answers the info routes
(``/healthz``, ``/v1/models``, ``/v1/ab/stats``) and refuses bad requests; were the model's limits
Ray Serve's (``max_ongoing_requests``, ``max_queued_requests``), those would count against them and a
full queue would be the proxy's text 503. Here only generations count (``n`` choices take ``n``
places), and the ingress turns ``QueueFull`` into raykd's JSON 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class QueueFull(Exception):
    """Every place is taken and the queue is full: answer 503."""


class Admission:
    def __init__(self, working: int, waiting: int):
        if working < 1 or waiting < 0:
            raise ValueError(f"working >= 1 and waiting >= 0 places needed, got {working} and {waiting}")
        self.working, self.waiting = working, waiting
        self.places = asyncio.Semaphore(working)
        self.in_work = self.in_queue = self.refused = 0

    @asynccontextmanager
    async def place(self) -> AsyncIterator[None]:
        """Hold a working place for the block; wait for one if the queue has room, else raise
        ``QueueFull`` at once. A caller cancelled while waiting leaves the queue."""
        if self.places.locked() and self.in_queue >= self.waiting:
            self.refused += 1
            raise QueueFull(f"{self.working} generations working and {self.waiting} waiting")
        self.in_queue += 1
        try:
            await self.places.acquire()
        finally:
            self.in_queue -= 1
        self.in_work += 1
        try:
            yield
        finally:
            self.in_work -= 1
            self.places.release()

    def stats(self) -> dict:
        return {"working": self.in_work, "waiting": self.in_queue, "refused": self.refused,
                "max_working": self.working, "max_waiting": self.waiting}
