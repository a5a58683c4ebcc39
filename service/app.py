"""The FastAPI application: v1 routers, problem+json errors, backends built at start-up."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from core.settings import Settings, get_settings
from service import problems
from service.deps import Backends
from service.routes import catalog, datasets, health, jobs, models

log = logging.getLogger("pareto.api")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.backends = Backends.connect(settings)
        if not len(app.state.backends.keys):
            log.warning("PARETO_API_KEYS is empty: every request will be refused with 401")
        yield

    app = FastAPI(
        title="Pareto",
        version="1",
        summary="Model optimization toward the quality-vs-footprint Pareto frontier, measured on the target.",
        lifespan=lifespan,
    )
    problems.install(app)
    app.include_router(health.router)
    for module in (models, datasets, jobs, catalog):
        app.include_router(module.router, prefix="/v1")
    return app


app = create_app()
