"""The event-stream decoder against the standard's rules, in every chunking."""

from __future__ import annotations

import pytest

from fopro_client.sse import ServerSentEvent, SSEDecoder, iter_sse

STREAM = (
    b": keep-alive\n\n"
    b'id: 1\nevent: job_event\ndata: {"id": 1}\n\n'
    b"event: progress\r\ndata: first\r\ndata:second\r\n\r\n"
    b"retry: 2500\rdata: cr only\r\r"
    b"id: 7\nevent: end\ndata: {}\n\n"
)
EXPECTED = [
    ServerSentEvent("job_event", '{"id": 1}', "1"),
    ServerSentEvent("progress", "first\nsecond", "1"),  # the last id stays in force
    ServerSentEvent("message", "cr only", "1"),
    ServerSentEvent("end", "{}", "7"),
]


def split_every(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64, len(STREAM)])
def test_events_come_out_the_same_in_any_chunking(size: int) -> None:
    decoder = SSEDecoder()
    assert list(iter_sse(split_every(STREAM, size), decoder)) == EXPECTED
    assert decoder.retry_ms == 2500
    assert decoder.last_event_id == "7"


def test_a_crlf_split_across_chunks_ends_one_line_not_two() -> None:
    events = list(iter_sse([b"data: a\r", b"\n", b"\r", b"\ndata: b\n\n"]))
    assert events == [ServerSentEvent("message", "a", None), ServerSentEvent("message", "b", None)]


def test_multibyte_characters_split_across_chunks_survive() -> None:
    text = 'data: {"message": "Läsion größer"}\n\n'.encode()
    cut = text.index("ä".encode()) + 1
    assert next(iter(iter_sse([text[:cut], text[cut:]]))).data == '{"message": "Läsion größer"}'


def test_an_unfinished_event_at_the_end_is_dropped() -> None:
    assert list(iter_sse([b"data: complete\n\ndata: cut off"])) == [
        ServerSentEvent("message", "complete", None)
    ]


def test_a_final_cr_still_ends_the_stream_s_last_event() -> None:
    assert list(iter_sse([b"data: x\r\r"])) == [ServerSentEvent("message", "x", None)]


def test_field_rules() -> None:
    stream = (
        b"\xef\xbb\xbfdata:  two spaces\n\n"  # a BOM is dropped; only one leading space is
        b"id: bad\0id\ndata: a\n\n"  # an id with NUL is ignored
        b"id\ndata\n\n"  # a bare field name means an empty value
        b"retry: soon\nunknown: x\nevent: e\n\n"  # no data: nothing is dispatched
        b"data: after\n\n"  # ... and the event name does not leak into the next event
    )
    decoder = SSEDecoder()
    assert list(iter_sse([stream], decoder)) == [
        ServerSentEvent("message", " two spaces", None),
        ServerSentEvent("message", "a", None),
        ServerSentEvent("message", "", ""),
        ServerSentEvent("message", "after", ""),
    ]
    assert decoder.retry_ms is None
