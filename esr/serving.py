"""Serving an ASGI app with uvicorn until SIGTERM or Ctrl-C: the demo target and the service.

uvicorn's own handlers stop it gracefully (requests in flight finish); afterwards it raises
the signal again for the handler it found, ours, so the caller simply returns (exit 0)
instead of meeting esr-locust's KeyboardInterrupt handler.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

import uvicorn


def url_of(host: str, port: int) -> str:
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


class AnnouncingServer(uvicorn.Server):
    """uvicorn's server, telling `announce` its URL once it listens (port 0 made real)."""

    def __init__(self, config: uvicorn.Config, announce: Callable[[str], object]) -> None:
        super().__init__(config)
        self.announce = announce

    async def startup(self, sockets: list | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            port = self.servers[0].sockets[0].getsockname()[1]
            self.announce(url_of(self.config.host, port))


def serve_until_stopped(config: uvicorn.Config, announce: Callable[[str], object]) -> None:
    """Serve until SIGTERM or SIGINT, then let requests in flight finish and return."""
    server = AnnouncingServer(config, announce)

    def stop(signum: int, frame: object) -> None:
        server.should_exit = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
