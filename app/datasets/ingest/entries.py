"""One pass over an archive's entries: names, kinds, sizes and compression ratios checked against
the limits, images (DICOM included) decoded and stored while no error is known, CSV files kept
for labelling.

The caller supplies where images go (``ImageSink``) and hears about progress (``ProgressFn``).
Images are stored while the archive streams by (one pass, even for tar.gz), only as long as no
error has been found; an invalid result means the caller deletes what was stored.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.core.config import Settings
from app.datasets.ingest.archive import (
    ArchiveEntry,
    ArchiveError,
    ArchiveFormat,
    ArchiveReader,
    EntryKind,
    EntryTooLarge,
    EntryUnreadable,
    TooManyEntries,
    UnknownArchiveFormat,
    clean_entry_path,
    display_name,
    entry_suffix,
    unsafe_name_reason,
)
from app.datasets.ingest.dicom import (
    DICOM_EXTENSIONS,
    DicomHeader,
    DicomImage,
    has_dicom_magic,
    read_dicom,
)
from app.datasets.ingest.images import CheckedImage, ImageRejected, check_image
from app.datasets.problems import ProblemCode, ProblemLog
from foprokd.images import IMAGE_EXTENSIONS

# Ratios of small entries say nothing about bombs (a 2 KB CSV of zeros compresses 100:1).
RATIO_FLOOR_BYTES = 1024 * 1024
# Operating-system litter that zipping a folder adds; skipped with a warning.
_SYSTEM_NAMES = frozenset({"thumbs.db", "desktop.ini", ".ds_store"})


@dataclass(frozen=True)
class IngestLimits:
    """Per-archive limits: bytes per entry and in total (uncompressed), file entries, pixels per
    image, and the uncompressed/compressed ratio of an entry."""

    max_file_bytes: int
    max_total_bytes: int
    max_entries: int
    max_image_pixels: int
    max_compression_ratio: float

    @classmethod
    def from_settings(cls, settings: Settings) -> IngestLimits:
        """The configured limits; the uncompressed total shares the upload ceiling, so a
        compressed archive cannot carry more data than an uncompressed upload may."""
        return cls(
            max_file_bytes=settings.max_file_bytes,
            max_total_bytes=settings.max_upload_bytes,
            max_entries=settings.max_images,
            max_image_pixels=settings.max_image_pixels,
            max_compression_ratio=settings.max_compression_ratio,
        )


@dataclass(frozen=True)
class DicomReading:
    """How DICOM entries are read: ``group_salt`` keys the hash of PatientIDs
    (``dicom.salted_group``); ``split_frames`` makes each frame of a multi-frame file an image
    instead of refusing the file."""

    group_salt: str
    split_frames: bool = False


@dataclass(frozen=True)
class StoredImage:
    """Where a sink put an image: object key and sha256 of the stored bytes."""

    object_key: str
    sha256: str


class ImageSink(Protocol):
    def __call__(self, image: CheckedImage, source_sha256: str) -> StoredImage:
        """Store ``image`` (content-addressed by ``source_sha256``, the file's own digest)."""
        ...


@dataclass(frozen=True)
class IngestProgress:
    """Entries handled so far (``entries_total`` is None until a streamed tar ends) and archive
    bytes read so far out of ``bytes_total``."""

    entries_done: int
    entries_total: int | None
    bytes_done: int
    bytes_total: int | None

    def as_dict(self) -> dict[str, Any]:
        """The progress block of a dataset's stats; ``fraction`` in [0, 1] or None."""
        fraction = None
        if self.entries_total:
            fraction = self.entries_done / self.entries_total
        elif self.bytes_total:
            fraction = self.bytes_done / self.bytes_total
        return {
            "entries_done": self.entries_done,
            "entries_total": self.entries_total,
            "bytes_done": self.bytes_done,
            "bytes_total": self.bytes_total,
            "fraction": round(min(fraction, 1.0), 4) if fraction is not None else None,
        }


ProgressFn = Callable[[IngestProgress], None]


def archive_problem(exc: ArchiveError) -> ProblemCode:
    """The problem code for an archive that cannot be opened at all."""
    if isinstance(exc, UnknownArchiveFormat):
        return ProblemCode.unsupported_archive
    if isinstance(exc, TooManyEntries):
        return ProblemCode.too_many_files
    return ProblemCode.corrupt_archive


@dataclass
class ScannedImage:
    """A valid image entry: its digest as found in the archive (of the converted pixels for
    DICOM, whose file bytes carry PHI), where it was stored (None once an error was known), its
    size in pixels, its stored size in bytes and, for DICOM, the allow-listed header, the
    salted patient group and, for a frame, its file."""

    path: str
    source_sha256: str
    stored: StoredImage | None
    width: int
    height: int
    size: int
    dicom: DicomHeader | None = None
    group: str | None = None
    source_file: str | None = None  # the multi-frame file this image is a frame of


@dataclass
class _Budget:
    """Entries (all but directories) and declared uncompressed bytes (of every file, read or
    skipped: skipping a tar.gz entry still decompresses it) charged against the limits."""

    entries: int = 0
    declared_bytes: int = 0

    def charge(self, entry: ArchiveEntry, limits: IngestLimits, log: ProblemLog) -> bool:
        """Count ``entry``; log and return False once a limit is passed (validation stops)."""
        if entry.kind is EntryKind.directory:
            return True
        self.entries += 1
        self.declared_bytes += entry.size if entry.kind is EntryKind.file else 0
        if self.entries > limits.max_entries:
            log.error(display_name(entry.name), ProblemCode.too_many_files, _too_many_files(limits))
            return False
        if self.declared_bytes > limits.max_total_bytes:
            log.error(
                display_name(entry.name), ProblemCode.total_too_large, _too_many_bytes(limits)
            )
            return False
        return True


@dataclass
class EntryScan:
    """What one pass over the archive found; ``fatal`` means validation stopped part-way."""

    images: dict[str, ScannedImage] = field(default_factory=dict)
    rejected_images: set[str] = field(default_factory=set)
    other_files: set[str] = field(default_factory=set)
    csvs: dict[str, bytes] = field(default_factory=dict)
    frames: dict[str, list[str]] = field(default_factory=dict)  # multi-frame file -> its frames
    names: set[str] = field(default_factory=set)
    stored: dict[str, StoredImage] = field(default_factory=dict)
    budget: _Budget = field(default_factory=_Budget)
    files: int = 0
    total_bytes: int = 0
    converted: int = 0
    fatal: bool = False
    archive_sha256: str | None = None

    def image_paths(self) -> list[str]:
        """Every image entry, valid or rejected, sorted."""
        return sorted({*self.images, *self.rejected_images})

    def stats(self, archive_format: ArchiveFormat) -> dict[str, Any]:
        """The ``archive_format`` and ``entries`` blocks of a dataset's stats (and ``dicom``, the
        allow-listed header fields counted, when the archive holds DICOM files)."""
        dicom = [image.dicom for image in self.images.values() if image.dicom is not None]
        extra: dict[str, Any] = {}
        if dicom:
            extra["dicom"] = {
                "images": len(dicom),
                "modalities": _tally(h.modality or "unknown" for h in dicom),
                "photometric_interpretations": _tally(h.photometric_interpretation for h in dicom),
                "bits_stored": _tally(str(h.bits_stored) for h in dicom),
                "transfer_syntaxes": _tally(h.transfer_syntax for h in dicom),
                "with_patient_group": sum(
                    1 for image in self.images.values() if image.group is not None
                ),
            }
        return {
            **extra,
            "archive_format": archive_format.value,
            "entries": {
                "files": self.files,
                "images": len(self.images),
                "rejected_images": len(self.rejected_images),
                "ignored_files": len(self.other_files),
                "converted_images": self.converted,
                "uncompressed_bytes": self.total_bytes,
            },
        }


def _tally(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return dict(sorted(counts.items()))


def scan_archive(
    reader: ArchiveReader,
    *,
    limits: IngestLimits,
    sink: ImageSink,
    log: ProblemLog,
    archive_name: str,
    dicom: DicomReading,
    archive_bytes: int | None = None,
    progress: ProgressFn | None = None,
) -> EntryScan:
    """Check every entry of ``reader`` into ``log`` and store valid images through ``sink``.

    ``dicom`` says how DICOM entries are read.

    ``archive_name`` names archive-wide problems; ``archive_bytes`` is the archive's size (for
    progress). ``progress`` is called after every entry; an exception it raises aborts the scan.
    Unless the scan is ``fatal``, ``archive_sha256`` is the archive's digest (None when the
    archive ends badly).
    """
    scan = EntryScan()
    _check_index(reader, limits, log, scan)
    last_entry = archive_name
    if not scan.fatal:
        try:
            for done, entry in enumerate(reader.entries(), start=1):
                last_entry = display_name(entry.name)
                _scan_entry(reader, entry, scan, log, limits, sink, dicom)
                if progress is not None:
                    progress(
                        IngestProgress(done, reader.entry_count, reader.bytes_read, archive_bytes)
                    )
                if scan.fatal:
                    break
        except ArchiveError as exc:
            where = archive_name if last_entry == archive_name else f"after {last_entry!r}"
            log.error(last_entry, ProblemCode.corrupt_archive, f"{exc} ({where})")
            scan.fatal = True
    if not scan.fatal:
        scan.archive_sha256 = _finish(reader, log, archive_name)
    return scan


def _finish(reader: ArchiveReader, log: ProblemLog, archive_name: str) -> str | None:
    try:
        return reader.finish()
    except (ArchiveError, OSError) as exc:
        log.error(archive_name, ProblemCode.corrupt_archive, f"the archive ends badly: {exc}")
        return None


def _check_index(
    reader: ArchiveReader, limits: IngestLimits, log: ProblemLog, scan: EntryScan
) -> None:
    """Zip lists every entry up front: refuse too many files or too many bytes before reading."""
    listing = reader.listing()
    if listing is None:
        return
    budget = _Budget()
    scan.fatal = not all(budget.charge(entry, limits, log) for entry in listing)


def _too_many_files(limits: IngestLimits) -> str:
    return (
        f"the archive has more than {limits.max_entries} entries (the limit); split the dataset "
        "or ask an admin to raise FOPRO_MAX_IMAGES"
    )


def _too_many_bytes(limits: IngestLimits) -> str:
    return (
        f"the archive unpacks to more than {limits.max_total_bytes} bytes (the limit); split the "
        "dataset or ask an admin to raise FOPRO_MAX_UPLOAD_BYTES"
    )


def _scan_entry(
    reader: ArchiveReader,
    entry: ArchiveEntry,
    scan: EntryScan,
    log: ProblemLog,
    limits: IngestLimits,
    sink: ImageSink,
    dicom: DicomReading,
) -> None:
    if not scan.budget.charge(entry, limits, log):
        scan.fatal = True
        return
    unsafe = unsafe_name_reason(entry.name, directory=entry.kind is EntryKind.directory)
    if unsafe is not None:
        log.error(display_name(entry.name), ProblemCode(unsafe[0]), unsafe[1])
        return
    path = clean_entry_path(entry.name)
    if entry.kind is EntryKind.directory:
        return
    if entry.kind in (EntryKind.symlink, EntryKind.hardlink):
        log.error(path, ProblemCode.link, f"{entry.kind} entries are not allowed; store the file")
        return
    if entry.kind is not EntryKind.file:
        log.error(path, ProblemCode.special_file, f"{entry.kind} entries are not allowed")
        return
    scan.files += 1
    if path in scan.names:
        log.error(path, ProblemCode.duplicate_entry, "the archive holds two entries with this path")
        return
    scan.names.add(path)
    name = posixpath.basename(path)
    if path.startswith("__MACOSX/") or name.lower() in _SYSTEM_NAMES or name.startswith("._"):
        log.warn(path, ProblemCode.ignored_file, "operating-system metadata; ignored")
        return
    suffix = entry_suffix(path)
    # PACS exports often name DICOM files without an extension: those are read to look for DICM
    # (unless unreadable anyway, so that a big or encrypted README stays a warning).
    unreadable = entry.encrypted or entry.size > limits.max_file_bytes
    if (suffix and suffix not in _READ_SUFFIXES) or (not suffix and unreadable):
        _ignore(path, suffix, scan, log)
        return
    if entry.encrypted:
        log.error(
            path, ProblemCode.encrypted, "encrypted entries cannot be read; zip without a password"
        )
        return
    data = _read_entry(reader, entry, path, scan, log, limits)
    if data is None:
        return
    if suffix == ".csv":
        scan.csvs[path] = data
        return
    is_dicom = suffix in DICOM_EXTENSIONS or (not suffix and has_dicom_magic(data))
    if not suffix and not is_dicom:
        _ignore(path, suffix, scan, log)
        return
    _scan_image(path, data, scan, log, limits, sink, dicom if is_dicom else None)


_READ_SUFFIXES = frozenset({*IMAGE_EXTENSIONS, *DICOM_EXTENSIONS, ".csv"})


def _ignore(path: str, suffix: str, scan: EntryScan, log: ProblemLog) -> None:
    scan.other_files.add(path)
    log.warn(
        path,
        ProblemCode.ignored_file,
        f"not an image ({suffix or 'no extension'}); ignored. Images must be "
        f"{', '.join(sorted(IMAGE_EXTENSIONS | DICOM_EXTENSIONS))} (or DICOM files without an "
        "extension)",
    )


def _read_entry(
    reader: ArchiveReader,
    entry: ArchiveEntry,
    path: str,
    scan: EntryScan,
    log: ProblemLog,
    limits: IngestLimits,
) -> bytes | None:
    too_big = (
        f"over the per-file limit of {limits.max_file_bytes} bytes; downscale it or ask an "
        "admin to raise FOPRO_MAX_FILE_BYTES"
    )
    if entry.size > limits.max_file_bytes:
        log.error(path, ProblemCode.file_too_large, f"{entry.size} bytes is {too_big}")
        return None
    ratio_limit = limits.max_compression_ratio
    if entry.compressed_size is not None and _ratio_exceeds(
        entry.size, entry.compressed_size, ratio_limit
    ):
        log.error(
            path,
            ProblemCode.compression_ratio,
            _ratio_message(entry.size, entry.compressed_size, ratio_limit),
        )
        return None
    try:
        read = reader.read(entry, limits.max_file_bytes)
    except EntryTooLarge:
        log.error(
            path,
            ProblemCode.file_too_large,
            f"it unpacks to more than its declared size, {too_big}",
        )
        return None
    except EntryUnreadable as exc:
        log.error(path, ProblemCode.corrupt_archive, f"the entry cannot be unpacked: {exc}")
        return None
    scan.total_bytes += len(read.data)
    if scan.total_bytes > limits.max_total_bytes:
        log.error(path, ProblemCode.total_too_large, _too_many_bytes(limits))
        scan.fatal = True
        return None
    if _ratio_exceeds(len(read.data), read.compressed_bytes, ratio_limit):
        log.error(
            path,
            ProblemCode.compression_ratio,
            _ratio_message(len(read.data), read.compressed_bytes, ratio_limit),
        )
        return None
    return read.data


def _ratio_exceeds(size: int, compressed: int, limit: float) -> bool:
    return size >= RATIO_FLOOR_BYTES and size / max(compressed, 1) > limit


def _ratio_message(size: int, compressed: int, limit: float) -> str:
    return (
        f"{compressed} compressed bytes unpack to {size} ({size / max(compressed, 1):.0f}:1), over "
        f"the limit of {limit:.0f}:1; this looks like a zip bomb"
    )


def _scan_image(
    path: str,
    data: bytes,
    scan: EntryScan,
    log: ProblemLog,
    limits: IngestLimits,
    sink: ImageSink,
    dicom: DicomReading | None,
) -> None:
    """Check one image (DICOM when ``dicom`` says how to read it) and store it; each frame of
    a multi-frame DICOM file split into frames is an image ``<path>#frame=0001``, ...."""
    decoded: DicomImage | None = None
    try:
        if dicom is None:
            checked = check_image(data, max_pixels=limits.max_image_pixels)
        else:
            decoded = read_dicom(
                data,
                max_pixels=limits.max_image_pixels,
                group_salt=dicom.group_salt,
                split_frames=dicom.split_frames,
            )
    except ImageRejected as exc:
        scan.rejected_images.add(path)
        log.error(path, ProblemCode(exc.kind), exc.message)
        return
    if decoded is None:
        _keep(path, checked, hashlib.sha256(data).hexdigest(), scan, log, sink)
        return
    multi = len(decoded.frames) > 1
    for number, frame in enumerate(decoded.frames, start=1):
        name = f"{path}#frame={number:04d}" if multi else path
        # A DICOM file's bytes hold its header (PHI): it is known by its pixels instead.
        image = _keep(name, frame, hashlib.sha256(frame.data).hexdigest(), scan, log, sink)
        image.dicom, image.group = decoded.header, decoded.group
        if multi:
            image.source_file = path
            scan.frames.setdefault(path, []).append(name)


def _keep(
    path: str,
    checked: CheckedImage,
    source_sha256: str,
    scan: EntryScan,
    log: ProblemLog,
    sink: ImageSink,
) -> ScannedImage:
    if checked.note:
        code = ProblemCode.converted if checked.converted else ProblemCode.multi_frame
        log.warn(path, code, checked.note)
    scan.converted += checked.converted
    stored = scan.stored.get(source_sha256)
    # Once the dataset is known to be invalid, storing more images would only be deleted again.
    if stored is None and not log.failed:
        stored = scan.stored[source_sha256] = sink(checked, source_sha256)
    image = scan.images[path] = ScannedImage(
        path, source_sha256, stored, checked.width, checked.height, len(checked.data)
    )
    return image
