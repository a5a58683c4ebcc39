"""Background duties of the gateway: failing queued jobs whose target no worker serves."""

from __future__ import annotations

import asyncio
import logging

from starlette.concurrency import run_in_threadpool

from core.registry import fail_unservable
from service.deps import Backends

log = logging.getLogger("pareto.api")
EVERY_S = 5.0


async def watch_targets(b: Backends) -> None:
    while True:
        await asyncio.sleep(EVERY_S)
        try:
            failed = await run_in_threadpool(fail_unservable, b.jobs, b.r, b.settings.target_wait_s)
            for job_id in failed:
                log.warning("job %s failed: no worker serves its target", job_id)
        except Exception as e:  # Redis away: try again next round
            log.warning("target watchdog skipped a round: %s", e)
