"""Resync jobs: `POST /v1/integrations/{id}/resync` queues one, `GET /v1/sync/{job_id}` reads it.

No background task: a job's status is a function of its age on the emulator's clock (`state.now()`):
`queued` for the first 0.2 s, `ongoing` until 0.5 s, then terminal. The import is applied the first time
anything looks after that (the job's status or the user's integration list), jobs in the order they were
queued, each under the limit in force when it was queued. Terminal statuses are those the G2 backend
guide names: `completed`; `partially_synced` when the cap stopped the import (or the source only partly
syncs anyway); `failed` for a source whose sync fails regardless of the limit.
"""

from __future__ import annotations

from bff_dev.emulator.connect_records import SyncJob
from bff_dev.emulator.limits import counted, reimport
from bff_dev.emulator.seed import SeedIntegration
from bff_dev.emulator.state import EmulatorState, new_id

QUEUED_SECONDS = 0.2
COMPLETES_AFTER_SECONDS = 0.5


def queue(state: EmulatorState, sub: str, seed: SeedIntegration, limit: int | None) -> SyncJob:
    job = SyncJob(
        job_id=new_id("sync_", 12), sub=sub, integration_id=seed.wallet_id, created_at=state.now(), limit=limit
    )
    state.sync_jobs[job.job_id] = job
    return job


def status(state: EmulatorState, job: SyncJob) -> str:
    settle(state, job.sub)
    if job.result is not None:
        return job.result
    return "queued" if state.now() - job.created_at < QUEUED_SECONDS else "ongoing"


def settle(state: EmulatorState, sub: str) -> None:
    """Apply every job of this user that has finished by now and was not applied yet."""
    now = state.now()
    for job in state.sync_jobs.values():  # insertion order: the order they were queued
        if job.sub == sub and job.result is None and now >= job.created_at + COMPLETES_AFTER_SECONDS:
            _apply(state, job)


def _apply(state: EmulatorState, job: SyncJob) -> None:
    user = state.users_by_sub[job.sub]
    seed = next(s for s in user.integrations if s.wallet_id == job.integration_id)
    if seed.sync == "FAILED":
        job.result = "failed"
        return
    if not counted(seed):
        job.result = "completed"  # csv files and sources that never ran import nothing the limit counts
        return
    imports = state.imports[job.sub]
    finished_ms = int((job.created_at + COMPLETES_AFTER_SECONDS) * 1000)
    entry = reimport(seed, imports, job.limit, finished_ms)
    imports[seed.wallet_id] = entry
    job.result = "partially_synced" if entry.limited or seed.sync == "PARTIALLY SYNCED" else "completed"
