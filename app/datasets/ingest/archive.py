"""Upload archives read entry by entry, in bounded memory, without extracting anything to disk.

Formats: ``.zip`` (read from a local scratch copy: its index sits at the end), ``.tar`` and
``.tar.gz`` (streamed straight from the object store). The format is sniffed from the first bytes,
never trusted from a file name. Entry names are reported as stored, hostile ones included;
``unsafe_name_reason`` says what is wrong with a name, ``clean_entry_path`` normalises a safe one.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import BinaryIO, cast

# Enough for the tar magic at offset 257 ("ustar") and every other signature.
SNIFF_BYTES = 512
# Real pax headers and long names are a few KB; anything near this is an attack.
MAX_HEADER_BYTES = 8 * 1024 * 1024
_COPY_CHUNK = 1024 * 1024


class ArchiveFormat(StrEnum):
    zip = "zip"
    tar = "tar"
    tar_gz = "tar.gz"


class EntryKind(StrEnum):
    file = "file"
    directory = "directory"
    symlink = "symlink"
    hardlink = "hardlink"
    device = "device"
    fifo = "fifo"
    socket = "socket"
    other = "other"


class ArchiveError(Exception):
    """The archive as a whole cannot be read (corrupt, truncated, or not the sniffed format)."""


class UnknownArchiveFormat(ArchiveError):
    """The first bytes match none of zip, tar, tar.gz."""


class TooManyEntries(ArchiveError):
    """A zip's index declares more entries than allowed (refused before the index is parsed)."""


class EntryTooLarge(Exception):
    """An entry decompressed to more bytes than the caller allowed."""


class EntryUnreadable(Exception):
    """One entry cannot be decompressed (bad CRC, unsupported method, encryption)."""


@dataclass(frozen=True)
class ArchiveEntry:
    """One entry: ``name`` as stored in the archive; ``size`` the declared uncompressed bytes;
    ``compressed_size`` the stored bytes when the format records them per entry (zip), else None."""

    name: str
    kind: EntryKind
    size: int
    compressed_size: int | None
    encrypted: bool = False


@dataclass(frozen=True)
class EntryData:
    """The bytes of one entry and how many compressed archive bytes produced them (for the
    compression-ratio check; equal to ``len(data)`` for an uncompressed tar)."""

    data: bytes
    compressed_bytes: int


def format_from_filename(filename: str) -> ArchiveFormat | None:
    """The format a file name's extension claims (``.zip``, ``.tar``, ``.tar.gz``/``.tgz``)."""
    lower = filename.lower()
    if lower.endswith((".tar.gz", ".tgz")):
        return ArchiveFormat.tar_gz
    if lower.endswith(".tar"):
        return ArchiveFormat.tar
    if lower.endswith(".zip"):
        return ArchiveFormat.zip
    return None


def sniff_format(head: bytes) -> ArchiveFormat | None:
    """The archive format from the first ``SNIFF_BYTES`` bytes, or None when it is none we read.

    Gzip is assumed to wrap a tar; a gzip of anything else fails later as a corrupt archive.
    """
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return ArchiveFormat.zip
    if head.startswith(b"\x1f\x8b"):
        return ArchiveFormat.tar_gz
    if len(head) >= 262 and head[257:262] == b"ustar":
        return ArchiveFormat.tar
    return None


def unsafe_name_reason(name: str, *, directory: bool = False) -> tuple[str, str] | None:
    """Why an entry name must not be used, as ``(kind, explanation)``, or None when it is safe.

    ``kind`` is ``absolute_path``, ``path_traversal`` or ``unsafe_name`` (control characters,
    bytes that are not UTF-8, an empty path). A ``directory`` may name the archive's root (``.``,
    ``./``): ``tar -czf x.tar.gz .`` and ``bsdtar`` store one first.
    """
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in name):
        return "unsafe_name", "the name contains control characters"
    if any(0xD800 <= ord(char) <= 0xDFFF for char in name):
        return "unsafe_name", "the name is not valid UTF-8"
    if name.startswith(("/", "\\")) or (len(name) >= 2 and name[1] == ":" and name[0].isalpha()):
        return "absolute_path", "absolute paths are not allowed; use paths relative to the root"
    if ".." in name.replace("\\", "/").split("/"):
        return "path_traversal", "'..' would point outside the dataset"
    if not clean_entry_path(name) and not (directory and name):
        return "unsafe_name", "the name is empty"
    return None


def display_name(name: str, limit: int = 300) -> str:
    """``name`` safe to show and store: bytes that are not UTF-8 and control characters become
    ``\\x..`` escapes; cut to ``limit`` characters."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    shown = "".join(char if char.isprintable() else f"\\x{ord(char):02x}" for char in text)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def clean_entry_path(name: str) -> str:
    """``name`` as a plain relative POSIX path: ``\\`` separators become ``/``, empty and ``.``
    segments go (``./a//b`` -> ``a/b``). Only for names ``unsafe_name_reason`` accepts."""
    return "/".join(part for part in name.replace("\\", "/").split("/") if part not in ("", "."))


class HashingReader(io.RawIOBase):
    """Reads through ``source`` while counting the bytes and hashing them (sha256)."""

    def __init__(self, source: BinaryIO) -> None:
        super().__init__()
        self._source = source
        self._digest = hashlib.sha256()
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self._source.read(len(buffer))
        count = len(data)
        buffer[:count] = data
        self._digest.update(data)
        self.bytes_read += count
        return count

    def drain(self) -> None:
        """Read (and hash) whatever the consumer left unread, e.g. tar's end-of-archive padding."""
        while self._source_chunk():
            pass

    def _source_chunk(self) -> int:
        data = self._source.read(_COPY_CHUNK)
        self._digest.update(data)
        self.bytes_read += len(data)
        return len(data)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()


class _Prefixed(io.RawIOBase):
    """``head`` followed by the rest of ``rest``: puts sniffed bytes back in front of a stream."""

    def __init__(self, head: bytes, rest: io.RawIOBase) -> None:
        super().__init__()
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        if self._head:
            count = min(len(buffer), len(self._head))
            buffer[:count] = self._head[:count]
            self._head = self._head[count:]
            return count
        return self._rest.readinto(buffer) or 0


class ArchiveReader(ABC):
    """Entries of one archive, in archive order. ``read`` applies to the entry just yielded."""

    format: ArchiveFormat
    #: Number of entries when the format has an index (zip), else None until the end.
    entry_count: int | None = None

    def __init__(self, source: HashingReader) -> None:
        self._source = source

    @abstractmethod
    def entries(self) -> Iterator[ArchiveEntry]:
        """Every entry, directories and links included; raises ``ArchiveError``."""

    @abstractmethod
    def read(self, entry: ArchiveEntry, limit: int) -> EntryData:
        """The bytes of file ``entry``; ``EntryTooLarge`` past ``limit`` bytes (nothing more is
        held in memory), ``EntryUnreadable`` when this entry alone is broken."""

    def listing(self) -> list[ArchiveEntry] | None:
        """Every entry before any is read, when the format has an index (zip); else None."""
        return None

    @property
    def bytes_read(self) -> int:
        """Archive bytes consumed so far (for progress)."""
        return self._source.bytes_read

    def finish(self) -> str:
        """Consume the rest of the archive; returns the sha256 of all its bytes."""
        self._source.drain()
        return self._source.sha256


class _ZipReader(ArchiveReader):
    format = ArchiveFormat.zip

    def __init__(self, source: HashingReader, path: Path, max_entries: int | None) -> None:
        super().__init__(source)
        if max_entries is not None:
            _check_zip_entry_count(path, max_entries)
        try:
            self._zip = zipfile.ZipFile(path)
            self._infos = self._zip.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise ArchiveError(f"not a readable zip archive: {exc}") from exc
        self.entry_count = len(self._infos)
        self._current: zipfile.ZipInfo | None = None

    def entries(self) -> Iterator[ArchiveEntry]:
        for info in self._infos:
            self._current = info
            yield _zip_entry(info)

    def listing(self) -> list[ArchiveEntry] | None:
        return [_zip_entry(info) for info in self._infos]

    def read(self, entry: ArchiveEntry, limit: int) -> EntryData:
        info = self._current
        if info is None or info.filename != entry.name:
            raise RuntimeError("a zip entry can only be read while it is current")
        if info.compress_type not in _READABLE_ZIP_METHODS:
            raise EntryUnreadable(
                f"compression method {info.compress_type} is not supported; "
                "re-create the zip with deflate (the default of every zip tool)"
            )
        try:
            with self._zip.open(info) as handle:
                data = handle.read(limit + 1)
        except (zipfile.BadZipFile, zlib.error, RuntimeError, OSError) as exc:
            raise EntryUnreadable(str(exc)) from exc
        except EOFError as exc:
            raise EntryUnreadable("the entry's compressed data ends early") from exc
        if len(data) > limit:
            raise EntryTooLarge(f"more than {limit} bytes")
        return EntryData(data, info.compress_size)

    def close(self) -> None:
        self._zip.close()


# What Python's zipfile can decompress; anything else is refused by name, not by its exception.
_READABLE_ZIP_METHODS = frozenset(
    {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
)


def _check_zip_entry_count(path: Path, max_entries: int) -> None:
    """Refuse a zip whose end record declares too many entries: ZipFile would build an object per
    entry first (a 1 GB index of empty names is ~20 million of them)."""
    with path.open("rb") as handle:
        # zipfile's own end-record reader (stable since Python 2; handles zip64).
        end = zipfile._EndRecData(handle)  # type: ignore[attr-defined]
    if end is None:
        raise ArchiveError("not a readable zip archive: it has no end-of-central-directory record")
    declared = int(end[zipfile._ECD_ENTRIES_TOTAL])  # type: ignore[attr-defined]
    if declared > max_entries:
        raise TooManyEntries(
            f"the zip lists {declared} entries, more than the limit of {max_entries}; split the "
            "dataset or ask an admin to raise FOPRO_MAX_IMAGES"
        )


def _zip_entry(info: zipfile.ZipInfo) -> ArchiveEntry:
    return ArchiveEntry(
        name=info.filename,
        kind=_zip_kind(info),
        size=info.file_size,
        compressed_size=info.compress_size,
        encrypted=bool(info.flag_bits & 0x1),
    )


def _zip_kind(info: zipfile.ZipInfo) -> EntryKind:
    """The kind an entry's Unix mode (high 16 bits of ``external_attr``) gives it.

    Only the file-type bits decide, whatever system wrote the zip: permission bits alone
    (``writestr`` stores ``0o600``) and MS-DOS attributes (no mode at all) are a regular file;
    a link, device, FIFO or socket type is named so that validation refuses it.
    """
    file_type = stat.S_IFMT(info.external_attr >> 16)
    if info.is_dir() or file_type == stat.S_IFDIR:
        return EntryKind.directory
    if file_type == 0:
        dos_directory = info.external_attr & _MSDOS_DIRECTORY
        return EntryKind.directory if dos_directory else EntryKind.file
    return _UNIX_FILE_TYPES.get(file_type, EntryKind.other)


_MSDOS_DIRECTORY = 0x10
_UNIX_FILE_TYPES = {
    stat.S_IFREG: EntryKind.file,
    stat.S_IFLNK: EntryKind.symlink,
    stat.S_IFCHR: EntryKind.device,
    stat.S_IFBLK: EntryKind.device,
    stat.S_IFIFO: EntryKind.fifo,
    stat.S_IFSOCK: EntryKind.socket,
}


class _HeaderGuard(io.RawIOBase):
    """Passes reads through while an allowance lasts.

    tarfile reads every header record (pax headers, GNU long names) whole into memory, so a
    hostile tar.gz could make it allocate gigabytes from a few compressed kilobytes. The tar
    reader grants each entry its declared size plus ``MAX_HEADER_BYTES`` for the next headers.
    """

    def __init__(self, source: BinaryIO) -> None:
        super().__init__()
        self._source = source
        self.allowance = MAX_HEADER_BYTES

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        if self.allowance <= 0:
            raise ArchiveError(
                f"a tar header is larger than {MAX_HEADER_BYTES} bytes; this is no image archive"
            )
        view = memoryview(buffer)[: self.allowance]
        data = self._source.read(len(view))
        view[: len(data)] = data
        self.allowance -= len(data)
        return len(data)


class _TarReader(ArchiveReader):
    def __init__(self, source: HashingReader, stream: io.RawIOBase, gzipped: bool) -> None:
        super().__init__(source)
        self.format = ArchiveFormat.tar_gz if gzipped else ArchiveFormat.tar
        buffered = io.BufferedReader(stream, buffer_size=64 * 1024)
        decoded = gzip.GzipFile(fileobj=buffered) if gzipped else buffered
        self._guard = _HeaderGuard(cast(BinaryIO, decoded))
        self._current: tarfile.TarInfo | None = None
        self._count = 0
        try:
            # The reader owns the TarFile for the whole validation; close() releases it.
            self._tar = tarfile.open(fileobj=cast(BinaryIO, self._guard), mode="r|")  # noqa: SIM115
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
            raise ArchiveError(f"not a readable {self.format} archive: {exc}") from exc

    def entries(self) -> Iterator[ArchiveEntry]:
        try:
            for info in self._tar:
                self._current = info
                self._count += 1
                self._guard.allowance = info.size + MAX_HEADER_BYTES
                yield ArchiveEntry(
                    name=info.name, kind=_tar_kind(info), size=info.size, compressed_size=None
                )
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
            raise ArchiveError(f"not a readable {self.format} archive: {exc}") from exc
        self.entry_count = self._count

    def read(self, entry: ArchiveEntry, limit: int) -> EntryData:
        if self._current is None or self._current.name != entry.name:
            raise RuntimeError("a streamed tar entry can only be read while it is current")
        before = self._source.bytes_read
        try:
            handle = self._tar.extractfile(self._current)
            if handle is None:
                raise EntryUnreadable("the entry holds no data")
            data = handle.read(limit + 1)
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
            raise ArchiveError(f"the archive breaks off inside {entry.name!r}: {exc}") from exc
        if len(data) > limit:
            raise EntryTooLarge(f"more than {limit} bytes")
        consumed = self._source.bytes_read - before
        # Read-ahead makes the per-entry count approximate; a plain tar stores bytes 1:1.
        compressed = max(consumed, 1) if self.format is ArchiveFormat.tar_gz else len(data)
        return EntryData(data, compressed)

    def close(self) -> None:
        self._tar.close()


def _tar_kind(info: tarfile.TarInfo) -> EntryKind:
    # POSIX reads a typeflag it does not know as a regular file, and so does tarfile (its data
    # follows the header); as a file its size also counts against the limits.
    if info.isreg() or info.type not in tarfile.SUPPORTED_TYPES:
        return EntryKind.file
    if info.isdir():
        return EntryKind.directory
    if info.issym():
        return EntryKind.symlink
    if info.islnk():
        return EntryKind.hardlink
    if info.ischr() or info.isblk():
        return EntryKind.device
    if info.isfifo():
        return EntryKind.fifo
    return EntryKind.other


@contextmanager
def open_archive(
    stream: BinaryIO, *, scratch_dir: Path, max_entries: int | None = None
) -> Iterator[ArchiveReader]:
    """Sniff ``stream``'s format and yield a reader over its entries.

    A zip is first copied to a temporary file in ``scratch_dir`` (deleted on exit); tar and tar.gz
    are read as a stream. Raises ``UnknownArchiveFormat`` when the format is none of these,
    ``TooManyEntries`` when a zip declares more than ``max_entries`` entries, ``ArchiveError``
    when it cannot be read.
    """
    source = HashingReader(stream)
    head = _read_head(source)
    fmt = sniff_format(head)
    if fmt is None:
        raise UnknownArchiveFormat("not a zip, tar or tar.gz archive (judged by its first bytes)")
    rest = _Prefixed(head, source)
    if fmt is ArchiveFormat.zip:
        scratch_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=scratch_dir, prefix="archive-", suffix=".zip") as tmp:
            shutil.copyfileobj(rest, tmp, _COPY_CHUNK)
            tmp.flush()
            zip_reader = _ZipReader(source, Path(tmp.name), max_entries)
            try:
                yield zip_reader
            finally:
                zip_reader.close()
        return
    tar_reader = _TarReader(source, rest, gzipped=fmt is ArchiveFormat.tar_gz)
    try:
        yield tar_reader
    finally:
        tar_reader.close()


def _read_head(source: HashingReader) -> bytes:
    head = bytearray()
    buffer = bytearray(SNIFF_BYTES)
    while len(head) < SNIFF_BYTES:
        count = source.readinto(memoryview(buffer)[: SNIFF_BYTES - len(head)])
        if not count:
            break
        head += buffer[:count]
    return bytes(head)


def entry_suffix(path: str) -> str:
    """Lower-case extension of an archive path (``.png``), or ``""``."""
    return PurePosixPath(path).suffix.lower()
