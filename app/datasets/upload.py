"""Upload bodies streamed to the object store in bounded memory.

The request body is read chunk by chunk on the event loop and handed through a bounded in-memory
pipe to a thread running the synchronous ``ObjectStore.put``; at most ``PIPE_CHUNKS`` chunks are
in flight, so the API's memory does not grow with the archive. Two body shapes:

* ``multipart/form-data``: form fields first (``name``, options), then one file part; parsed as it
  streams (python-multipart), the file part is never buffered whole.
* anything else: the body is the archive; fields come from the query string, the file name from
  ``filename`` or ``Content-Disposition``.

The size limit is enforced while streaming; the archive format is sniffed from the first bytes
before anything is stored. If anything fails, the store never commits the object.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from email.message import Message
from typing import BinaryIO, cast

import anyio
import anyio.from_thread
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream
from fastapi import Request
from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect

from app.core.errors import InvalidInput, ServiceError, ServiceUnavailable
from app.core.storage import ObjectInfo, ObjectStore, StoreUnavailable
from app.datasets.ingest.archive import SNIFF_BYTES, ArchiveFormat, sniff_format
from app.datasets.service import UnsupportedArchive, UploadIncomplete, upload_too_large

# Chunks in flight between the event loop and the writer thread (uvicorn hands out <= 64 KiB).
PIPE_CHUNKS = 16
MAX_FORM_FIELDS = 50
MAX_FIELD_BYTES = 64 * 1024
ARCHIVE_CONTENT_TYPE = "application/octet-stream"


class UploadInterrupted(Exception):
    """The body ended before its end was reached (client gone, limit hit): store nothing."""


@dataclass(frozen=True)
class ReceivedArchive:
    """A completely stored upload: ``stored`` (key, size, sha256), the sniffed format, the
    client's file name if it gave one, and the request's fields."""

    stored: ObjectInfo
    format: ArchiveFormat
    filename: str | None
    fields: dict[str, str]


BeforeStore = Callable[[dict[str, str], str | None], None]
TooLarge = Callable[[int], ServiceError]
"""Bytes declared or received so far -> the error refusing an upload past ``max_bytes``."""


async def receive_archive(
    request: Request,
    store: ObjectStore,
    key: str,
    *,
    max_bytes: int,
    before_store: BeforeStore,
    too_large: TooLarge | None = None,
) -> ReceivedArchive:
    """Stream the request's archive to ``key`` in bounded memory.

    ``before_store(fields, filename)`` runs (in a thread) once the fields are known and before any
    byte is stored; it raises to refuse the upload (bad fields, name taken). Raises
    ``too_large(bytes)`` (default ``UploadTooLarge``) past ``max_bytes`` of body, declared or
    streamed, ``UnsupportedArchive`` when the content is not zip/tar/tar.gz, ``InvalidInput`` for
    a malformed form.
    """
    refuse = too_large or (lambda _seen: upload_too_large(max_bytes))
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise refuse(int(declared))
    body = _limited(request.stream(), max_bytes, refuse)
    content_type, params = parse_options_header(request.headers.get("content-type"))
    fields = dict(request.query_params)
    if content_type == b"multipart/form-data":
        boundary = params.get(b"boundary")
        if not boundary:
            raise InvalidInput("multipart/form-data without a boundary parameter.")
        form = _FormStream(body, boundary)
        filename = await form.read_fields(fields)
        file_bytes = form.file_bytes()
    else:
        filename = fields.get("filename") or _disposition_filename(request)
        file_bytes = body
    if filename and "filename" not in fields:
        fields["filename"] = filename
    await anyio.to_thread.run_sync(before_store, fields, filename)
    archive_format, file_bytes = await _sniffed(file_bytes)
    try:
        stored = await _store_stream(file_bytes, store, key)
    except StoreUnavailable as exc:
        raise ServiceUnavailable(f"The object store is unavailable: {exc}") from exc
    except BaseException:
        # put() commits nothing on failure; this also covers an interrupted commit.
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_delete_if_present, store, key)
        raise
    return ReceivedArchive(stored, archive_format, filename, fields)


def _delete_if_present(store: ObjectStore, key: str) -> None:
    try:
        store.delete(key)
    except StoreUnavailable:
        return  # nothing was committed, or the store is down and had nothing to commit either


def _disposition_filename(request: Request) -> str | None:
    header = request.headers.get("content-disposition")
    if not header:
        return None
    message = Message()
    message["content-disposition"] = header
    return message.get_filename()


async def _limited(
    chunks: AsyncIterator[bytes], max_bytes: int, too_large: TooLarge
) -> AsyncIterator[bytes]:
    total = 0
    try:
        async for chunk in chunks:
            total += len(chunk)
            if total > max_bytes:
                raise too_large(total)
            if chunk:
                yield chunk
    except ClientDisconnect as exc:
        raise UploadIncomplete(
            f"The connection closed after {total} bytes, before the upload ended; send it again."
        ) from exc


async def _sniffed(chunks: AsyncIterator[bytes]) -> tuple[ArchiveFormat, AsyncIterator[bytes]]:
    """The archive format from the first bytes, and the same bytes again followed by the rest."""
    head = b""
    async for chunk in chunks:
        head += chunk
        if len(head) >= SNIFF_BYTES:
            break
    if not head:
        raise InvalidInput("The upload is empty; send a .zip, .tar or .tar.gz archive.")
    found = sniff_format(head[:SNIFF_BYTES])
    if found is None:
        raise UnsupportedArchive(
            "The upload is not a zip, tar or tar.gz archive (judged by its first bytes). Pack "
            "the images with zip or tar."
        )

    async def replay() -> AsyncIterator[bytes]:
        yield head
        async for chunk in chunks:
            yield chunk

    return found, replay()


async def _store_stream(chunks: AsyncIterator[bytes], store: ObjectStore, key: str) -> ObjectInfo:
    """``store.put(key, ...)`` in a worker thread, fed from ``chunks`` through a bounded pipe.

    The put only sees a clean end of stream after the last chunk was sent; any error (or
    cancellation) on this side ends the pipe without that marker, so the put fails and stores
    nothing.
    """
    send, receive = anyio.create_memory_object_stream[bytes | None](PIPE_CHUNKS)
    pipe = _PipeReader(receive)
    stored: list[ObjectInfo] = []

    async def put() -> None:
        with receive:
            stored.append(
                await anyio.to_thread.run_sync(
                    lambda: store.put(key, cast(BinaryIO, pipe), content_type=ARCHIVE_CONTENT_TYPE)
                )
            )

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(put)
            async with send:
                async for chunk in chunks:
                    await send.send(chunk)
                await send.send(None)
    except BaseExceptionGroup as failures:
        raise _root_cause(failures) from None
    return stored[0]


def _root_cause(group: BaseExceptionGroup) -> BaseException:
    """The exception that started a failure: not the broken pipe it caused on the other side."""
    leaves = list(_leaves(group))
    for leaf in leaves:
        if not isinstance(
            leaf, (anyio.BrokenResourceError, anyio.ClosedResourceError, UploadInterrupted)
        ):
            return leaf
    return leaves[0]


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


class _PipeReader:
    """The thread side of the pipe: a file-like ``read(n)`` over chunks sent from the loop."""

    def __init__(self, receive: MemoryObjectReceiveStream[bytes | None]) -> None:
        self._receive = receive
        self._buffer = b""
        self._ended = False

    def read(self, size: int = -1) -> bytes:
        while not self._buffer and not self._ended:
            try:
                chunk = anyio.from_thread.run(self._receive.receive)
            except (anyio.EndOfStream, anyio.ClosedResourceError) as exc:
                raise UploadInterrupted("the upload stopped before its end") from exc
            if chunk is None:
                self._ended = True
            else:
                self._buffer = chunk
        if size < 0 or size >= len(self._buffer):
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


@dataclass(frozen=True)
class _FormEvent:
    """``field`` (name, value), ``file`` (the part's file name in ``value``), ``data`` (file
    bytes) or ``file_end``."""

    kind: str
    name: str = ""
    value: bytes = b""


class _FormStream:
    """A streaming multipart/form-data reader: text fields, then exactly one file part."""

    def __init__(self, body: AsyncIterator[bytes], boundary: bytes) -> None:
        self._body = body
        self._events: list[_FormEvent] = []
        self._headers: dict[bytes, bytes] = {}
        self._header_field = b""
        self._header_value = b""
        self._field_name = ""
        self._field_value = bytearray()
        self._in_file = False
        self._parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field_data,
                "on_header_value": self._header_value_data,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
            },
        )

    async def read_fields(self, fields: dict[str, str]) -> str | None:
        """Collect the text fields before the file part into ``fields``; returns the file
        part's file name (None when the client sent none)."""
        count = 0
        async for event in self._events_from_body():
            if event.kind == "field":
                count += 1
                if count > MAX_FORM_FIELDS:
                    raise InvalidInput(f"More than {MAX_FORM_FIELDS} form fields.")
                if event.name in fields:
                    raise InvalidInput(f"Field {event.name!r} is given twice.")
                fields[event.name] = event.value.decode("utf-8", errors="replace")
            elif event.kind == "file":
                return event.value.decode("utf-8", errors="replace") or None
        raise InvalidInput("The form has no file part; attach the archive as a file field.")

    async def file_bytes(self) -> AsyncIterator[bytes]:
        """The file part's bytes; then checks that nothing but the end of the form follows."""
        async for event in self._events_from_body():
            if event.kind == "data":
                yield event.value
            elif event.kind == "file_end":
                break
        async for event in self._events_from_body():
            if event.kind == "file":
                raise InvalidInput("Send one archive per upload; the form has a second file.")
            if event.kind == "field":
                raise InvalidInput(
                    f"Form field {event.name!r} comes after the file; fields decide how the "
                    "archive is stored, so send them before the file part."
                )

    async def _events_from_body(self) -> AsyncIterator[_FormEvent]:
        while True:
            while self._events:
                yield self._events.pop(0)
            try:
                chunk = await anext(self._body)
            except StopAsyncIteration:
                self._parse(None)
                while self._events:
                    yield self._events.pop(0)
                return
            self._parse(chunk)

    def _parse(self, chunk: bytes | None) -> None:
        try:
            if chunk is None:
                self._parser.finalize()
            else:
                self._parser.write(chunk)
        except FormParserError as exc:
            raise InvalidInput(f"The multipart form is malformed: {exc}") from exc

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_field_data(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_field.strip().lower()] = self._header_value.strip()
        self._header_field = self._header_value = b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._in_file = b"filename" in params
        if self._in_file:
            self._events.append(_FormEvent("file", value=params[b"filename"]))
        else:
            self._field_name = params.get(b"name", b"").decode("utf-8", errors="replace")
            self._field_value = bytearray()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._events.append(_FormEvent("data", value=bytes(data[start:end])))
            return
        self._field_value += data[start:end]
        if len(self._field_value) > MAX_FIELD_BYTES:
            raise InvalidInput(
                f"Form field {self._field_name!r} is longer than {MAX_FIELD_BYTES} bytes."
            )

    def _part_end(self) -> None:
        if self._in_file:
            self._events.append(_FormEvent("file_end"))
        else:
            self._events.append(_FormEvent("field", self._field_name, bytes(self._field_value)))
