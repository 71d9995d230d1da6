"""Range header parsing follows RFC 9110 for the single-range forms clients send."""

from __future__ import annotations

import pytest

from app.students.byte_ranges import ByteRange, RangeNotSatisfiable, parse_range


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-0", ByteRange(0, 0, 100)),
        ("bytes=10-19", ByteRange(10, 19, 100)),
        ("bytes=90-", ByteRange(90, 99, 100)),
        ("bytes=90-1000", ByteRange(90, 99, 100)),
        ("bytes=-10", ByteRange(90, 99, 100)),
        ("bytes=-1000", ByteRange(0, 99, 100)),
        ("Bytes = 5 - 6", ByteRange(5, 6, 100)),
    ],
)
def test_single_ranges(header: str, expected: ByteRange) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", [None, "items=0-5", "bytes=0-1, 4-5"])
def test_whole_file_when_no_single_byte_range(header: str | None) -> None:
    assert parse_range(header, 100) is None


@pytest.mark.parametrize(
    "header", ["bytes=100-", "bytes=5-4", "bytes=-0", "bytes=-", "bytes=x-1", "bytes=1-2-3"]
)
def test_unsatisfiable_or_malformed(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as caught:
        parse_range(header, 100)
    assert caught.value.status_code == 416
    assert caught.value.size == 100


def test_empty_file_has_no_satisfiable_range() -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=0-", 0)
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=-5", 0)


def test_content_range_and_length() -> None:
    chosen = ByteRange(10, 19, 100)
    assert (chosen.length, chosen.content_range) == (10, "bytes 10-19/100")
