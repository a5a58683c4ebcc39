"""What the gateway does at start after a crash: rebuild job records if Redis lost them, and remove
upload spool files left by a process that died mid-upload (their S3 multipart uploads were never
completed, so nothing was listed; the server expires those)."""

from __future__ import annotations

import logging
import time

from starlette.concurrency import run_in_threadpool

from core.recovery import rebuild_if_empty
from service.deps import Backends

log = logging.getLogger("pareto.api")
STALE_SPOOL_S = 3600  # a spool file untouched this long belongs to no live upload (body idle timeout < this)


def sweep_spool(b: Backends) -> int:
    folder = b.settings.data_dir / "spool"
    removed = 0
    for path in folder.glob("upload-*") if folder.is_dir() else ():
        try:
            if time.time() - path.stat().st_mtime > max(STALE_SPOOL_S, b.settings.body_idle_timeout_s):
                path.unlink()
                removed += 1
        except OSError:
            pass
    return removed


async def recover_on_start(b: Backends) -> None:
    try:
        await run_in_threadpool(rebuild_if_empty, b.jobs, b.celery)
    except Exception as e:  # the API still serves what it can; `pareto admin rebuild` can be run later
        log.error("rebuilding job records at start failed: %s", e)
    if removed := await run_in_threadpool(sweep_spool, b):
        log.warning("removed %d upload spool files left by a stopped process", removed)
