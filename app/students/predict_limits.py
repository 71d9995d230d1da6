"""Bounds on ``POST /v1/jobs/{id}/predict``, so that no client can make the API hold or decode
more than a set budget: checked before the body is read, while it streams, and while decoding.

* the job and its exported student are checked first (404/409 before any byte is read);
* image parts stream one at a time (python-multipart): each is held only until it is decoded to
  the student's input size, the part count and every part's and the request's bytes are capped
  (413 as soon as a cap is passed);
* pixels are capped per image as stored (its header says, before any decode) and per request
  as decoded: a large JPEG decodes reduced (``draft``), other formats count whole, so a request
  of many large scans is refused before it has cost more than the budget;
* each API process runs at most ``FOPRO_MAX_CONCURRENT_PREDICTIONS`` at once; beyond, 429.
"""

from __future__ import annotations

import io
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import Request
from PIL import Image, UnidentifiedImageError
from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect

from app.core.errors import InvalidInput, PayloadTooLarge, TooManyRequests
from foprokd.images import to_model_rgb

IMAGE_FIELD = "files"
# A large JPEG is decoded reduced, keeping at least this many times the student's input side:
# the resize then sees enough detail to match the engine's, at a fraction of the decode cost.
REDUCED_SIDE_FACTOR = 4


class PredictionsBusy(TooManyRequests):
    code = "predictions_busy"


class ImageUnreadable(InvalidInput):
    code = "image_unreadable"


@dataclass(frozen=True)
class PredictBudget:
    """What one request may send and cost: images, bytes per image and in all, pixels per image
    (as stored) and in all (as decoded, after reduction)."""

    max_images: int
    max_image_bytes: int
    max_total_bytes: int
    max_image_pixels: int
    max_total_pixels: int


class PredictionSlots:
    """At most ``limit`` predictions at once in this process; one more answers 429 at once
    (queueing would hold the request's connection and memory while it waits)."""

    def __init__(self) -> None:
        self._active = 0
        self._lock = threading.Lock()

    @contextmanager
    def hold(self, limit: int) -> Iterator[None]:
        with self._lock:
            if self._active >= limit:
                raise PredictionsBusy(
                    f"{self._active} predictions are running on this server (the limit is "
                    f"{limit}, FOPRO_MAX_CONCURRENT_PREDICTIONS); retry in a moment.",
                    headers={"Retry-After": "1"},
                )
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1


prediction_slots = PredictionSlots()


def decode_reduced(data: bytes, image_size: int, *, max_pixels: int) -> tuple[np.ndarray, int]:
    """Image file bytes -> (float32 (3, S, S) RGB in [0, 1], pixels decoded).

    The header's size is checked against ``max_pixels`` before anything is decoded. A JPEG much
    larger than the student's input is decoded reduced (libjpeg's DCT scaling, PIL ``draft``)
    to at least ``REDUCED_SIDE_FACTOR * S`` on its shorter side; other formats decode whole.
    Raises ImageUnreadable for bytes PIL cannot decode or an image above ``max_pixels``; the
    message never carries Python object reprs.
    """
    try:
        with Image.open(io.BytesIO(data)) as raw:
            width, height = raw.size
            if width * height > max_pixels:
                raise ImageUnreadable(
                    f"{width}x{height} pixels is above the limit of {max_pixels} per image."
                )
            factor = min(width, height) // (REDUCED_SIDE_FACTOR * image_size)
            if raw.format == "JPEG" and factor >= 2:
                raw.draft(raw.mode, (width // factor, height // factor))
            decoded = raw.size[0] * raw.size[1]
            rgb = to_model_rgb(raw, image_size)
    except ImageUnreadable:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError):
        raise ImageUnreadable("not an image this server can read (PNG, JPEG, TIFF, ...).") from None
    except (OSError, ValueError, SyntaxError) as exc:
        # PIL's messages can name its internal buffers (`<_io.BytesIO object at 0x...>`).
        reason = str(exc).split(" <", 1)[0].strip() or type(exc).__name__
        raise ImageUnreadable(f"a damaged or unsupported image ({reason}).") from None
    pixels = np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)
    return pixels.astype(np.float32) / np.float32(255.0), decoded


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    data: bytearray | None = None


class _ImageParts:
    """python-multipart callbacks that collect parts; each finished part is queued, and the
    bytes of the part being read are capped as they arrive."""

    def __init__(self, boundary: bytes, budget: PredictBudget) -> None:
        self.budget = budget
        self.done: list[_Part] = []
        self.count = 0
        self._part = _Part()
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self.parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._data,
                "on_part_end": self._end,
            },
        )

    def _begin(self) -> None:
        self._part = _Part(data=bytearray())
        self._headers = {}

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = self._header_value = b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._part.name = params.get(b"name", b"").decode("utf-8", "replace")
        filename = params.get(b"filename")
        self._part.filename = filename.decode("utf-8", "replace") if filename else None
        if self._part.name != IMAGE_FIELD:
            raise InvalidInput(
                f"Unexpected form field {self._part.name!r}; send images as fields named "
                f"`{IMAGE_FIELD}` (options go in the query string)."
            )
        self.count += 1
        if self.count > self.budget.max_images:
            raise PayloadTooLarge(
                f"More than {self.budget.max_images} images in one request; send at most "
                f"{self.budget.max_images} per request."
            )

    def _data(self, data: bytes, start: int, end: int) -> None:
        assert self._part.data is not None
        self._part.data += data[start:end]
        if len(self._part.data) > self.budget.max_image_bytes:
            label = self._part.filename or f"image {self.count}"
            raise PayloadTooLarge(
                f"{label!r} has more than {self.budget.max_image_bytes} bytes "
                "(FOPRO_MAX_FILE_BYTES)."
            )

    def _end(self) -> None:
        self.done.append(self._part)


async def image_parts(request: Request, budget: PredictBudget) -> AsyncIterator[tuple[str, bytes]]:
    """The request's image parts as (file name, bytes), one at a time as the body streams.

    Raises InvalidInput for a body that is not multipart/form-data or a form with other fields,
    PayloadTooLarge past any byte or count cap of ``budget``.
    """
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > budget.max_total_bytes:
        raise _request_too_large(budget)
    content_type, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise InvalidInput(
            f"Send the images as multipart/form-data, one file field named `{IMAGE_FIELD}` each."
        )
    parts = _ImageParts(boundary, budget)
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > budget.max_total_bytes:
                raise _request_too_large(budget)
            _feed(parts, chunk)
            while parts.done:
                part = parts.done.pop(0)
                yield part.filename or f"image-{parts.count}", bytes(part.data or b"")
        _feed(parts, None)
    except ClientDisconnect as exc:
        raise InvalidInput("The connection closed before the images were all sent.") from exc
    while parts.done:
        part = parts.done.pop(0)
        yield part.filename or f"image-{parts.count}", bytes(part.data or b"")


def _feed(parts: _ImageParts, chunk: bytes | None) -> None:
    try:
        if chunk is None:
            parts.parser.finalize()
        else:
            parts.parser.write(chunk)
    except FormParserError as exc:
        raise InvalidInput("The multipart/form-data body is malformed.") from exc


def _request_too_large(budget: PredictBudget) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The images add up to more than {budget.max_total_bytes} bytes "
        "(FOPRO_MAX_PREDICT_BYTES); send fewer per request."
    )


async def decode_images(
    parts: AsyncIterator[tuple[str, bytes]],
    decode: Callable[[bytes], tuple[np.ndarray, int]],
    budget: PredictBudget,
    run_sync: Callable[..., Any],
) -> tuple[list[str], np.ndarray]:
    """Decode each part as it arrives (``decode`` in a thread via ``run_sync``), keeping only
    its reduced pixels; returns the file names and the (N, 3, S, S) batch. Raises
    ImageUnreadable naming the file, PayloadTooLarge past the request's pixel budget."""
    names: list[str] = []
    batch: list[np.ndarray] = []
    decoded_pixels = 0
    async for filename, data in parts:
        try:
            pixels, cost = await run_sync(decode, data)
        except ImageUnreadable as exc:
            raise ImageUnreadable(f"{filename!r}: {exc.message}") from None
        decoded_pixels += cost
        if decoded_pixels > budget.max_total_pixels:
            raise PayloadTooLarge(
                f"The images need more than {budget.max_total_pixels} decoded pixels in all "
                "(FOPRO_MAX_PREDICT_PIXELS); send fewer or smaller images per request."
            )
        names.append(filename)
        batch.append(pixels)
    if not batch:
        raise InvalidInput(f"Send at least one image as a multipart field named `{IMAGE_FIELD}`.")
    return names, np.stack(batch)
