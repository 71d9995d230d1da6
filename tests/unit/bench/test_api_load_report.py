"""``bench.api_load``'s report: the slow requests it names and the kernel counters it reads."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pytest

from bench.api_load import TCP_COUNTERS, Result, server_side, tcp_change, tcp_counters


def test_the_slow_requests_are_named_slowest_first_with_when_they_were_sent() -> None:
    result = Result(
        "polled", [0.01, 3.02, 0.02, 14.6, 0.9], Counter(), 10.0, [0.0, 0.4, 1.0, 0.5, 2.0]
    )
    assert result.slow() == [(0.5, 14.6), (0.4, 3.02)]
    line = result.line()
    assert "2 over 1 s: 14.6 s sent at +0.5 s, 3.0 s sent at +0.4 s" in line
    quiet = Result("polled", [0.01, 0.02], Counter(), 1.0, [0.0, 0.5])
    assert "over 1 s" not in quiet.line()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/net/netstat")
def test_the_tcp_counters_are_read_and_a_change_is_printed() -> None:
    counters = tcp_counters()
    assert set(counters) == set(TCP_COUNTERS)
    assert all(isinstance(value, int) and value >= 0 for value in counters.values())
    earlier = {**counters, "ListenOverflows": counters["ListenOverflows"] - 1}
    assert "ListenOverflows" in tcp_change(earlier)


def test_the_servers_own_lines_for_the_slow_requests_are_found_by_request_id(
    tmp_path: Path,
) -> None:
    result = Result(
        "polled",
        [0.01, 14.6, 2.5],
        Counter(),
        10.0,
        [0.0, 0.5, 1.0],
        ["bench-1", "bench-2", "bench-3"],
    )
    assert result.slow_ids() == ["bench-2", "bench-3"]
    log = tmp_path / "ours.log"
    logged = "slow request: GET /v1/jobs/{job_id} answered 200 after 14.58 s (request id bench-2)"
    log.write_text(
        json.dumps({"message": "GET /v1/jobs/x 200", "request_id": "bench-2"}) + "\n"
        + json.dumps({"message": logged, "request_id": "-"}) + "\n"
        + json.dumps({"message": "slow request: ... (request id bench-20)"}) + "\n"
    )  # fmt: skip
    report = server_side(result, log)
    assert "server logged 1 of the 2 slow requests" in report
    assert logged in report
    assert server_side(Result("fast", [0.01], Counter(), 1.0, [0.0], ["bench-9"]), log) == ""
