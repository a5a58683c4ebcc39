"""The FastAPI application: v1 routers, problem+json errors, backends built at start-up."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from core.checks.model import prepare_checks
from core.settings import Settings, get_settings
from service import middleware, problems
from service.deps import Backends
from service.limits import RequestLimits
from service.recovery import recover_on_start
from service.routes import catalog, datasets, events, health, jobs, metrics, models
from service.watchdog import watch_targets

log = logging.getLogger("pareto.api")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        middleware.configure_logs()  # JSON lines with the request id, tenant and job id
        prepare_checks()
        app.state.backends = Backends.connect(settings)
        if not len(app.state.backends.keys):
            log.warning("PARETO_API_KEYS is empty: every request will be refused with 401")
        await recover_on_start(app.state.backends)
        watchdog = asyncio.create_task(watch_targets(app.state.backends))
        yield
        watchdog.cancel()

    app = FastAPI(
        title="Pareto",
        version="1",
        summary="Model optimization toward the quality-vs-footprint Pareto frontier, measured on the target.",
        lifespan=lifespan,
    )
    problems.install(app)
    app.add_middleware(RequestLimits, settings=settings)
    middleware.install(app)
    app.include_router(health.router)
    app.include_router(metrics.router)
    for module in (models, datasets, jobs, events, catalog):
        app.include_router(module.router, prefix="/v1")
    return app


app = create_app()
