"""`esr-locust serve`: the job store, the queue and the HTTP API in one process."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from esr.errors import BadInput
from esr.pool import PoolSettings, ServicePool
from esr.service import DEFAULT_BIND
from esr.service.api import LINK_TTL_S, RunEvents, Service, create_app
from esr.service.dispatcher import Dispatcher, stop_orphans
from esr.service.store import IN_PROGRESS, QUEUED, Store, StoreTooNew
from esr.serving import serve_until_stopped


@dataclass(frozen=True, kw_only=True)
class ServeSettings:
    data: Path
    bind: tuple[str, int] = DEFAULT_BIND
    workers: int = 0  # local Locust workers per run; 0 runs each in one process
    max_running: int = 1  # runs at a time on this machine: load tests compete for it
    link_ttl_s: float = LINK_TTL_S
    public_url: str | None = None  # the service's address as people reach it (a proxy's)
    metrics_bind: tuple[str, int] | None = None  # Prometheus's endpoint, when asked for
    pool: PoolSettings | None = None  # standing workers on other hosts run each run's citizens


def open_store(data: Path) -> Store:
    """The store in the data folder, named absolutely: run directories are recorded under it,
    and a service started again from another working directory must still find them."""
    try:
        return Store(Path(data).resolve())
    except StoreTooNew as error:
        raise BadInput(str(error)) from None
    except OSError as error:
        raise BadInput(f"cannot use {data} as the service's data folder: {error}") from None


def build_app(settings: ServeSettings, store: Store) -> FastAPI:
    events = RunEvents()
    pool = _open_pool(settings, store)
    dispatcher = Dispatcher(store, workers=settings.workers, max_running=settings.max_running,
                            pool=pool, notify=events.notify)
    service = Service(store, dispatcher, store.secret("link_key"), settings.link_ttl_s,
                      settings.public_url, pool)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        dispatcher.start()
        yield
        dispatcher.close()  # runs in progress stop gracefully and keep their report cards
        if pool is not None:
            pool.close()

    app = create_app(service, events)
    app.router.lifespan_context = lifespan
    return app


def _open_pool(settings: ServeSettings, store: Store) -> ServicePool | None:
    """The pool's lobby takes its address now: a taken address is said before serving."""
    if settings.pool is None:
        return None
    if settings.max_running > 1:
        raise BadInput("--pool runs one run at a time (each run's master holds the pool "
                       "address): leave out --max-running, or give it 1")
    pool = ServicePool(settings.pool)
    # A run's master that a killed service left behind holds the address: it stops first
    # (gracefully: its results are kept, and the queue reports the run as interrupted).
    for run in store.runs_with_status(*IN_PROGRESS):
        stop_orphans(run)
    pool.open()
    return pool


def serve(settings: ServeSettings, announce: Callable[[str], object] = print) -> None:
    """Serve until SIGTERM or Ctrl-C; runs in progress then stop gracefully (reported as
    interrupted), queued ones wait for the next start."""
    store = open_store(settings.data)
    app = build_app(settings, store)
    host = settings.bind[0]

    def ready(url: str) -> None:
        announce(f"esr-locust: service on {url} (data {settings.data.resolve()}); "
                 f"API docs at {url}/docs; Ctrl-C to stop")

    with _metrics(settings.metrics_bind, store, announce):
        serve_until_stopped(uvicorn.Config(
            app, host=host, port=settings.bind[1], log_config=None, log_level="warning",
            access_log=False, server_header=False, timeout_graceful_shutdown=5,
            proxy_headers=False), ready)


# A run's figures stay on the metrics endpoint this long after it ends: Prometheus's next
# scrapes see its final counts.
ENDED_RUNS_SHOWN_S = 300.0


@contextlib.contextmanager
def _metrics(bind: tuple[str, int] | None, store: Store, announce: Callable[[str], object]):
    """The service's Prometheus endpoint: its queue, its runs by status, and the figures of
    each run in progress or just ended (every agency's: an operator's view, on loopback by
    default)."""
    if bind is None:
        yield
        return
    from esr.metrics import MetricsServer

    def run_dirs() -> list[Path]:
        return [run.run_dir for run in store.runs_in_view(ENDED_RUNS_SHOWN_S)]

    def service() -> dict:
        by_status = store.status_counts()
        return {"queued": by_status.get(QUEUED, 0), "by_status": by_status}

    try:
        server = MetricsServer(bind, run_dirs, service)
    except OSError as error:
        raise BadInput(f"--metrics-bind {bind[0]}:{bind[1]}: cannot listen there "
                       f"({error.strerror}); choose another port") from None
    announce(f"esr-locust: metrics on {server.url}")
    with server:
        yield
