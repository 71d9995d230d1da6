"""The scale bench's exactly-once audit, on synthetic event logs of one job."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bench.scale import Event, audit_job

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def log(*rows: tuple[str, dict[str, Any]]) -> list[Event]:
    """Events one second apart, in the order given."""
    return [Event(i, kind, data, T0 + timedelta(seconds=i)) for i, (kind, data) in enumerate(rows)]


def state(source: str | None, target: str, owner: str = "h:1:a") -> tuple[str, dict[str, Any]]:
    return "state", {"from": source, "to": target, "lease_owner": owner}


EPOCH_1 = ("epoch", {"epoch": 1})


def test_a_clean_run_and_a_re_run_after_a_lost_lease_pass() -> None:
    clean = audit_job(log(state(None, "queued"), state("queued", "running"), EPOCH_1,
                          state("running", "succeeded")))  # fmt: skip
    assert clean.problems == []
    assert [a.outcome for a in clean.attempts] == ["succeeded"]

    re_run = audit_job(
        log(
            state(None, "queued"),
            state("queued", "running", "h:1:a"),
            EPOCH_1,
            state("running", "queued"),
            state("queued", "running", "h:2:b"),
            EPOCH_1,
            state("running", "succeeded"),
        )
    )
    assert re_run.problems == []
    assert [(a.owner, a.outcome) for a in re_run.attempts] == [
        ("h:1:a", "queued"),
        ("h:2:b", "succeeded"),
    ]


def test_a_second_claim_while_running_a_repeated_epoch_and_no_success_are_reported() -> None:
    audit = audit_job(
        log(
            state(None, "queued"),
            state("queued", "running", "h:1:a"),
            state("queued", "running", "h:2:b"),
            EPOCH_1,
            EPOCH_1,
        )
    )
    assert any("claimed while attempt by h:1:a still running" in p for p in audit.problems)
    assert any("epoch 1 twice" in p for p in audit.problems)
    assert "0 successful attempts" in audit.problems
    assert any("overlap" in p for p in audit.problems)


def test_an_epoch_written_after_its_attempt_ended_is_reported() -> None:
    audit = audit_job(log(state(None, "queued"), state("queued", "running"),
                          state("running", "succeeded"), EPOCH_1))  # fmt: skip
    assert any("epoch event outside any attempt" in p for p in audit.problems)


def test_a_runs_phases_are_timed_from_its_claim_and_phase_events_to_its_end() -> None:
    audit = audit_job(
        log(
            state(None, "queued"),
            state("queued", "running"),  # t=1
            ("info", {"phase": "training"}),  # t=2
            EPOCH_1,
            ("info", {"phase": "exporting"}),  # t=4 (evaluating not seen)
            state("running", "succeeded"),  # t=5
        )
    )
    assert audit.attempts[0].phase_seconds() == {"preparing": 1, "training": 2, "exporting": 1}
