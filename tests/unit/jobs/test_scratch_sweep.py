"""Scratch folders of runs whose worker was killed are removed; live runs' folders, and those of
runs that just ended (their supervisor is cleaning up), are kept."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from app.core.config import get_settings
from app.core.db import utcnow
from app.jobs.lease import claim_job
from tests.unit.jobs.conftest import Team, add_job
from workers.training import SWEEP_GRACE, run_dir_for, sweep_run_dirs


def test_only_folders_of_live_runs_survive_the_sweep(session: Session, team: Team) -> None:
    settings = get_settings()
    live_job = add_job(session, team)
    assert claim_job(session, live_job.id, "host:1:live0000", lease=timedelta(seconds=60))
    long_ago = utcnow() - SWEEP_GRACE - timedelta(seconds=1)
    finished_job = add_job(session, team, status="succeeded", updated_at=long_ago)
    # Queued again after its worker died.
    requeued_job = add_job(session, team, updated_at=long_ago)
    # Finished a moment ago: its own supervisor is removing the folder right now.
    just_finished_job = add_job(session, team, status="cancelled")

    live = run_dir_for(settings, live_job.id, "host:1:live0000")
    # The same job's folder from an earlier, killed attempt (another lease owner).
    earlier_attempt = run_dir_for(settings, live_job.id, "host:9:dead0000")
    finished = run_dir_for(settings, finished_job.id, "host:2:done0000")
    requeued = run_dir_for(settings, requeued_job.id, "host:3:gone0000")
    just_finished = run_dir_for(settings, just_finished_job.id, "host:5:busy0000")
    unknown_job = run_dir_for(settings, "job_deleted", "host:4:x")
    not_a_run = settings.data_dir / "work" / "notes"
    folders = (live, earlier_attempt, finished, requeued, just_finished, unknown_job, not_a_run)
    for folder in folders:
        folder.mkdir(parents=True)
        (folder / "checkpoint.pt").write_bytes(b"x" * 10)

    removed = sweep_run_dirs(session, settings)

    assert sorted(removed) == sorted([earlier_attempt, finished, requeued, unknown_job])
    assert (live / "checkpoint.pt").is_file()
    assert (just_finished / "checkpoint.pt").is_file()
    assert not_a_run.is_dir()  # not named like a run: not ours to delete
    assert not any(path.exists() for path in removed)
    assert sweep_run_dirs(session, settings) == []

    # Once the grace has passed, a folder its supervisor left behind is removed.
    just_finished_job.updated_at = long_ago
    session.commit()
    assert sweep_run_dirs(session, settings) == [just_finished]


def test_no_work_folder_is_nothing_to_do(session: Session) -> None:
    settings = get_settings()
    assert not (settings.data_dir / "work").exists()
    assert sweep_run_dirs(session, settings) == []
