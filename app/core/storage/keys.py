"""What a store accepts as an address: object keys, key prefixes and byte ranges.

Checked the same way on every backend, so that code tested against one behaves the same on the
other.
"""

from __future__ import annotations

from app.core.storage.errors import InvalidObjectKey, InvalidRange

MAX_KEY_BYTES = 1024
# The local store turns key segments into file names, which NAME_MAX limits to 255 bytes.
MAX_SEGMENT_BYTES = 255


def validate_object_key(key: str) -> str:
    """Return `key` if it is a safe relative path, else raise `InvalidObjectKey` saying why."""
    _check_path_like(key, what="key")
    if key.endswith("/"):
        raise InvalidObjectKey(f"key {key!r} must not end with '/'")
    return key


def _check_path_like(value: str, *, what: str) -> None:
    if not value:
        raise InvalidObjectKey(f"{what} must not be empty")
    if len(value.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidObjectKey(f"{what} {value[:40]!r}... is longer than {MAX_KEY_BYTES} bytes")
    if value.startswith("/"):
        raise InvalidObjectKey(f"{what} {value!r} must be relative (no leading '/')")
    if "\\" in value:
        raise InvalidObjectKey(f"{what} {value!r} must use '/' separators, not '\\'")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        raise InvalidObjectKey(f"{what} {value!r} must not contain control characters")
    # A trailing "/" (prefixes only) leaves one empty last segment, which is fine.
    segments = value.removesuffix("/").split("/")
    for segment in segments:
        if segment == "":
            raise InvalidObjectKey(f"{what} {value!r} has an empty path segment ('//')")
        if segment in (".", ".."):
            raise InvalidObjectKey(f"{what} {value!r} must not contain '.' or '..' segments")
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise InvalidObjectKey(
                f"{what} {value!r} has a segment longer than {MAX_SEGMENT_BYTES} bytes"
            )


def validate_prefix(prefix: str, *, allow_empty: bool) -> str:
    """Return `prefix` if it is a safe relative path (a trailing `/` allowed), else raise
    `InvalidObjectKey`; `""` (every object) passes only with `allow_empty`."""
    if prefix == "" and allow_empty:
        return prefix
    _check_path_like(prefix, what="prefix")
    return prefix


def check_range(start: int, length: int | None) -> None:
    """Raise `InvalidRange` unless `start` >= 0 and `length` is None or >= 1 (bytes)."""
    if start < 0:
        raise InvalidRange(f"range start must be >= 0, got {start}")
    if length is not None and length < 1:
        raise InvalidRange(f"range length must be >= 1 or None, got {length}")
