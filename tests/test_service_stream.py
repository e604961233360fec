"""The live stream wakes for an event written while it was reading the store.

A watcher reads the store, finds nothing new, then waits for the dispatcher's next notice.
An event written (and noticed) between that read and the wait must still wake it: else it
sits until the keep-alive, 15 s, or the next event, and the run's end (`done`, written just
after its last status) can be that late.
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from esr.service.api import KEEPALIVE_S, RunEvents, _stream
from esr.service.store import Event


class WrittenDuringTheRead:
    """A store whose first read misses the event written (and noticed) while it ran."""

    def __init__(self, events: RunEvents):
        self.notices, self.reads = events, 0

    def events(self, run_id: str, after: int = 0, limit: int = 1000) -> list[Event]:
        self.reads += 1
        if self.reads == 1:
            self.notices.notify(run_id)  # the dispatcher's notice, as the read ends
            return []
        return [Event(1, "2026-01-01T00:00:00+00:00", "done", {"status": "passed"})][after:]


def test_an_event_written_between_the_read_and_the_wait_still_wakes_the_stream():
    async def follow() -> tuple[bytes, float]:
        events = RunEvents()
        stream = _stream(SimpleNamespace(store=WrittenDuringTheRead(events)), events, "r1", 0)
        assert await anext(stream) == b"retry: 2000\n\n"
        started = time.monotonic()
        chunk = await asyncio.wait_for(anext(stream), KEEPALIVE_S + 5)
        return chunk, time.monotonic() - started

    chunk, waited_s = asyncio.run(follow())
    assert chunk.startswith(b"id: 1\nevent: done\n"), chunk
    assert waited_s < 1.0, f"the stream slept {waited_s:.1f} s through the notice"
