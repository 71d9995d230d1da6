"""HTTP ``Range: bytes=...`` for artifact downloads (RFC 9110 §14): one range per request."""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.core.errors import ServiceError

_SINGLE_RANGE = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")


class RangeNotSatisfiable(ServiceError):
    """HTTP 416: the range is malformed or lies outside the object of ``size`` bytes."""

    status_code = 416
    code = "range_not_satisfiable"

    def __init__(self, message: str, *, size: int) -> None:
        super().__init__(message, details={"size": size})
        self.size = size


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``start`` .. ``end`` inclusive (HTTP's convention), within an object of ``size``."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    @property
    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end}/{self.size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The single byte range ``header`` asks for within ``size`` bytes, or None for the whole.

    None also when the unit is not ``bytes`` or several ranges are asked for (a server may
    answer those with the full body). Raises RangeNotSatisfiable for a malformed byte range or
    one that starts past the end; an end past the end is clipped, as the RFC says.
    """
    if header is None:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes":
        return None
    if "," in spec:
        return None
    match = _SINGLE_RANGE.match(spec)
    if match is None or match.group(1) == match.group(2) == "":
        raise RangeNotSatisfiable(f"Malformed Range header {header!r}.", size=size)
    first, last = match.group(1), match.group(2)
    if first == "":
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(f"Range {header!r} selects no bytes.", size=size)
        return ByteRange(max(0, size - suffix), size - 1, size)
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if last != "" and int(last) < start:
        raise RangeNotSatisfiable(f"Range {header!r} ends before it starts.", size=size)
    if start >= size:
        raise RangeNotSatisfiable(
            f"Range {header!r} starts at or past the end of the {size}-byte file.", size=size
        )
    return ByteRange(start, end, size)
