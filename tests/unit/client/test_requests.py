"""Retries with backoff and jitter, only where repeating cannot do anything twice, and the API's
error envelope turned into typed errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest

from fopro_client import (
    AuthError,
    Conflict,
    ConnectionFailed,
    Forbidden,
    NotFound,
    RateLimited,
    ServerError,
    ValidationFailed,
)
from fopro_client.retry import RetryPolicy, retry_after_seconds
from tests.unit.client.conftest import Server, dataset_json, envelope, job_json, scripted

UNAVAILABLE = envelope(503, "unavailable", "The object store is unavailable.")


def test_reads_back_off_with_jitter_on_503_then_succeed() -> None:
    server = Server(scripted(UNAVAILABLE, UNAVAILABLE, httpx.Response(200, json=dataset_json())))
    with server.client(base_delay_s=1.0) as client:
        assert client.get_dataset("ds_1").name == "derm"
    assert len(server.requests) == 3
    # Full jitter: retry n waits a random time in [0, base * 2**n].
    assert len(server.waits) == 2
    assert 0 <= server.waits[0] <= 1.0
    assert 0 <= server.waits[1] <= 2.0
    assert server.waits[0] != server.waits[1]


def test_backoff_grows_exponentially_and_is_capped() -> None:
    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=4.0)
    for retry, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (8, 4.0)]:
        waits = [policy.backoff(retry) for _ in range(200)]
        assert max(waits) <= ceiling
        assert max(waits) > ceiling * 0.8  # it does use the whole window
        assert min(waits) >= 0


def test_retry_after_is_honoured_in_seconds_and_as_a_date() -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    server = Server(
        scripted(
            envelope(429, "rate_limited", "Slow down.", **{"Retry-After": "7"}),
            envelope(503, "unavailable", "Busy.", **{"Retry-After": later}),
            httpx.Response(200, json=dataset_json()),
        )
    )
    with server.client() as client:
        client.get_dataset("ds_1")
    assert server.waits[0] == 7.0
    assert 28 <= server.waits[1] <= 30


def test_retry_after_parsing_ignores_garbage() -> None:
    assert retry_after_seconds(httpx.Response(429, headers={"Retry-After": "soon"})) is None
    assert retry_after_seconds(httpx.Response(429)) is None
    assert retry_after_seconds(httpx.Response(429, headers={"Retry-After": " 12 "})) == 12.0


def test_a_retry_after_longer_than_the_policy_allows_is_raised_not_waited() -> None:
    server = Server(
        scripted(envelope(429, "rate_limited", "Try tomorrow.", **{"Retry-After": "86400"}))
    )
    with server.client(max_retry_after_s=60) as client, pytest.raises(RateLimited) as caught:
        client.list_jobs()
    assert caught.value.retry_after == 86400
    assert server.waits == []
    assert caught.value.message == "Try tomorrow."


def test_retries_stop_after_the_last_attempt_with_the_last_error() -> None:
    server = Server(lambda request: UNAVAILABLE)
    with server.client(attempts=3) as client, pytest.raises(ServerError) as caught:
        client.list_datasets()
    assert len(server.requests) == 3
    assert len(server.waits) == 2
    assert caught.value.status == 503
    assert caught.value.code == "unavailable"


def test_an_upload_is_not_repeated_after_a_503(tmp_path: Path) -> None:
    archive = tmp_path / "derm.zip"
    archive.write_bytes(b"PK\x05\x06" + bytes(18))
    server = Server(lambda request: UNAVAILABLE)
    with server.client() as client, pytest.raises(ServerError):
        client.upload_dataset(archive)
    assert len(server.requests) == 1


def test_an_upload_is_repeated_after_a_429_with_the_whole_file(tmp_path: Path) -> None:
    archive = tmp_path / "derm.zip"
    archive.write_bytes(b"archive bytes" * 1000)
    server = Server(
        scripted(
            envelope(429, "rate_limited", "Slow down.", **{"Retry-After": "1"}),
            httpx.Response(202, json=dataset_json()),
        )
    )
    with server.client() as client:
        client.upload_dataset(archive)
    assert len(server.requests) == 2
    # The second attempt sends the whole file again, from its start.
    assert all(archive.read_bytes() in r.content for r in server.requests)


def test_a_connection_that_never_opened_is_retried_even_for_a_post() -> None:
    server = Server(
        scripted(
            httpx.ConnectError("connection refused"),
            httpx.Response(201, json=job_json(status="queued")),
        )
    )
    with server.client() as client:
        assert client.retry_job("job_0").status == "queued"
    assert len(server.requests) == 2


def test_a_post_that_may_have_arrived_is_not_repeated() -> None:
    server = Server(
        scripted(httpx.ReadError("connection reset"), httpx.Response(201, json=job_json()))
    )
    with server.client() as client, pytest.raises(ConnectionFailed) as caught:
        client.retry_job("job_0")
    assert len(server.requests) == 1
    assert "FOPRO_URL" in caught.value.message


def test_a_read_is_repeated_after_a_dropped_connection() -> None:
    server = Server(scripted(httpx.ReadError("reset"), httpx.Response(200, json=job_json())))
    with server.client() as client:
        assert client.get_job("job_1").id == "job_1"
    assert len(server.requests) == 2


def test_a_submission_is_repeated_under_one_idempotency_key() -> None:
    server = Server(
        scripted(
            httpx.ReadError("reset"),
            UNAVAILABLE,
            httpx.Response(201, json=job_json()),
            httpx.Response(201, json=job_json(id="job_2")),
        )
    )
    with server.client() as client:
        client.submit_job("ds_1", "resnet50", "resnet18", params={"epochs": 2})
        client.submit_job("ds_1", "resnet50", "resnet18", idempotency_key="mine")
    keys = [r.headers["Idempotency-Key"] for r in server.requests]
    assert len(keys) == 4
    assert keys[0] == keys[1] == keys[2]  # the retries of one call share the key
    assert keys[3] == "mine"
    assert server.requests[0].read() == server.requests[2].read()


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (400, "bad_request", ValidationFailed),
        (401, "unauthenticated", AuthError),
        (403, "forbidden", Forbidden),
        (404, "not_found", NotFound),
        (409, "dataset_name_taken", Conflict),
        (413, "payload_too_large", ValidationFailed),
        (422, "teacher_weights_missing", ValidationFailed),
        (500, "internal", ServerError),
    ],
)
def test_the_error_envelope_becomes_a_typed_error(
    status: int, code: str, error: type[Exception]
) -> None:
    details = {"dataset_id": "ds_9"}
    answer = envelope(status, code, "Do this next.", details, **{"X-Request-ID": "rid-42"})
    server = Server(lambda request: answer)
    with server.client() as client, pytest.raises(error) as caught:
        client.get_dataset("ds_9")
    raised = caught.value
    assert type(raised) is error
    assert (raised.code, raised.message, raised.details) == (code, "Do this next.", details)
    assert (raised.status, raised.request_id) == (status, "rid-42")
    assert raised.envelope() == {
        "error": {"code": code, "message": "Do this next.", "details": details}
    }


def test_forbidden_is_an_auth_error() -> None:
    assert issubclass(Forbidden, AuthError)


def test_a_body_without_an_envelope_still_gives_a_useful_error() -> None:
    server = Server(lambda request: httpx.Response(502, text="<html>Bad Gateway</html>"))
    with server.client() as client, pytest.raises(ServerError) as caught:
        client.list_jobs()
    assert caught.value.status == 502
    assert "502" in caught.value.message
    assert "Bad Gateway" in caught.value.message
    assert len(server.requests) == 1  # 502 is not one of the statuses that are retried


def test_requests_carry_the_key_and_keep_a_path_prefix() -> None:
    server = Server(
        lambda request: httpx.Response(200, json={"items": [], "total": 0, "limit": 5, "offset": 0})
    )
    with server.client() as client:
        client._http.base_url = httpx.URL("http://fopro.test/service/")
        client.list_jobs(status="running", limit=5)
    request = server.requests[0]
    assert request.headers["Authorization"] == "Bearer fpk_test"
    assert request.url.path == "/service/v1/jobs"
    assert dict(request.url.params) == {"status": "running", "limit": "5", "offset": "0"}
