from __future__ import annotations

import pytest

from core.errors import Conflict
from core.job import Job, JobStatus
from core.recipes import builtin_recipe


def job(status=JobStatus.queued) -> Job:
    return Job(id="j_0", tenant="t", model_id="m_0", recipe=builtin_recipe("int8"), status=status)


def test_happy_path_stamps_times():
    running = job().moved_to(JobStatus.running)
    assert running.started_at and not running.finished_at
    done = running.moved_to(JobStatus.succeeded)
    assert done.finished_at and done.started_at == running.started_at


@pytest.mark.parametrize("final", [JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled])
def test_terminal_states_are_final(final):
    ended = job(JobStatus.running).moved_to(final)
    for status in JobStatus:
        with pytest.raises(Conflict):
            ended.moved_to(status)


def test_queued_job_cannot_succeed_without_running():
    with pytest.raises(Conflict):
        job().moved_to(JobStatus.succeeded)


def test_a_redelivered_job_may_start_again():
    assert job(JobStatus.running).moved_to(JobStatus.running).status is JobStatus.running


def test_manifest_keeps_tenant_and_round_trips():
    j = job()
    assert "tenant" not in j.model_dump() and j.manifest()["tenant"] == "t"
    assert Job.from_manifest(j.manifest()) == j
