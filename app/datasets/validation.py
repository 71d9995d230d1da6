"""Validation of one uploaded archive: every entry checked, valid images stored, labels, splits,
manifest rows and statistics worked out, and every rejection named with its entry and reason.

Pure Python + PIL (runs on the cpu queue, never imports torch). The caller supplies where images
go (``ImageSink``) and hears about progress; ``workers.ingest`` wires it to the database and the
object store. Images are stored while the archive streams by (one pass, even for tar.gz), only as
long as no error has been found; an invalid result means the caller deletes what was stored.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.core.config import Settings
from app.datasets.archive import (
    ArchiveEntry,
    ArchiveError,
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
from app.datasets.images import IMAGE_EXTENSIONS, CheckedImage, ImageRejected, check_image
from app.datasets.manifest import LabelColumns, csv_header, parse_label_csv
from app.datasets.problems import ProblemCode, ProblemLog
from app.datasets.schemas import IngestOptions
from app.datasets.statistics import dataset_statistics
from foprokd.manifest import ManifestRow
from foprokd.splits import SPLITS, new_seed, normalize_split, stratified_split

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


@dataclass
class IngestResult:
    """The outcome: ``log`` errors make it invalid; otherwise ``rows`` are the manifest."""

    log: ProblemLog
    rows: list[ManifestRow]
    classes: list[str]
    stats: dict[str, Any]
    split_seed: int | None
    archive_sha256: str | None
    image_bytes: int

    @property
    def ok(self) -> bool:
        return not self.log.failed

    @classmethod
    def rejected(cls, entry: str, code: ProblemCode, message: str) -> IngestResult:
        """The outcome for an archive refused as a whole (nothing was stored)."""
        log = ProblemLog()
        log.error(entry, code, message)
        return cls(log, [], [], {}, None, None, 0)


def archive_problem(exc: ArchiveError) -> ProblemCode:
    """The problem code for an archive that cannot be opened at all."""
    if isinstance(exc, UnknownArchiveFormat):
        return ProblemCode.unsupported_archive
    if isinstance(exc, TooManyEntries):
        return ProblemCode.too_many_files
    return ProblemCode.corrupt_archive


@dataclass
class _Image:
    path: str
    source_sha256: str
    stored: StoredImage | None
    width: int
    height: int
    size: int


@dataclass
class _Labelled:
    label: str
    split: str | None


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
class _Scan:
    """What one pass over the archive found."""

    images: dict[str, _Image] = field(default_factory=dict)
    rejected_images: set[str] = field(default_factory=set)
    other_files: set[str] = field(default_factory=set)
    csvs: dict[str, bytes] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)
    stored: dict[str, StoredImage] = field(default_factory=dict)
    budget: _Budget = field(default_factory=_Budget)
    files: int = 0
    total_bytes: int = 0
    converted: int = 0
    fatal: bool = False

    def image_paths(self) -> list[str]:
        return sorted({*self.images, *self.rejected_images})


def validate_archive(
    reader: ArchiveReader,
    *,
    options: IngestOptions,
    limits: IngestLimits,
    sink: ImageSink,
    archive_name: str,
    archive_bytes: int | None = None,
    progress: ProgressFn | None = None,
) -> IngestResult:
    """Check every entry of ``reader``, store valid images through ``sink`` and label them.

    ``archive_name`` names archive-wide problems; ``archive_bytes`` is the archive's size (for
    progress). ``progress`` is called after every entry; an exception it raises aborts
    validation (used when the dataset was deleted meanwhile).
    """
    log = ProblemLog()
    scan = _Scan()
    _check_index(reader, limits, log, scan)
    last_entry = archive_name
    if not scan.fatal:
        try:
            for done, entry in enumerate(reader.entries(), start=1):
                last_entry = display_name(entry.name)
                _scan_entry(reader, entry, scan, log, limits, sink)
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
    archive_sha256 = None if scan.fatal else _finish(reader, log, archive_name)
    if scan.fatal:
        return IngestResult(log, [], [], _scan_stats(scan, reader), None, archive_sha256, 0)
    return _label_and_split(scan, log, options, archive_name, reader, archive_sha256)


def _finish(reader: ArchiveReader, log: ProblemLog, archive_name: str) -> str | None:
    try:
        return reader.finish()
    except (ArchiveError, OSError) as exc:
        log.error(archive_name, ProblemCode.corrupt_archive, f"the archive ends badly: {exc}")
        return None


def _check_index(reader: ArchiveReader, limits: IngestLimits, log: ProblemLog, scan: _Scan) -> None:
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
    scan: _Scan,
    log: ProblemLog,
    limits: IngestLimits,
    sink: ImageSink,
) -> None:
    if not scan.budget.charge(entry, limits, log):
        scan.fatal = True
        return
    unsafe = unsafe_name_reason(entry.name)
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
    if suffix not in IMAGE_EXTENSIONS and suffix != ".csv":
        scan.other_files.add(path)
        log.warn(
            path,
            ProblemCode.ignored_file,
            f"not an image ({suffix or 'no extension'}); ignored. Images must be "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))}",
        )
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
    _scan_image(path, data, scan, log, limits, sink)


def _read_entry(
    reader: ArchiveReader,
    entry: ArchiveEntry,
    path: str,
    scan: _Scan,
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
    path: str, data: bytes, scan: _Scan, log: ProblemLog, limits: IngestLimits, sink: ImageSink
) -> None:
    source_sha256 = hashlib.sha256(data).hexdigest()
    try:
        checked = check_image(data, max_pixels=limits.max_image_pixels)
    except ImageRejected as exc:
        scan.rejected_images.add(path)
        log.error(path, ProblemCode(exc.kind), exc.message)
        return
    if checked.note:
        code = ProblemCode.converted if checked.converted else ProblemCode.multi_frame
        log.warn(path, code, checked.note)
    scan.converted += checked.converted
    stored = scan.stored.get(source_sha256)
    # Once the dataset is known to be invalid, storing more images would only be deleted again.
    if stored is None and not log.failed:
        stored = scan.stored[source_sha256] = sink(checked, source_sha256)
    scan.images[path] = _Image(
        path, source_sha256, stored, checked.width, checked.height, len(checked.data)
    )


def _label_and_split(
    scan: _Scan,
    log: ProblemLog,
    options: IngestOptions,
    archive_name: str,
    reader: ArchiveReader,
    archive_sha256: str | None,
) -> IngestResult:
    layout, labels_csv = _choose_layout(scan, log, options, archive_name)
    if layout == "csv" and labels_csv is not None:
        labels = _labels_from_csv(scan, log, options, labels_csv)
    elif layout == "folders":
        labels = _labels_from_folders(scan, log)
    else:
        labels = {}
    if not scan.images and not scan.rejected_images:
        log.error(
            archive_name,
            ProblemCode.no_images,
            f"no image files found; images must end in {', '.join(sorted(IMAGE_EXTENSIONS))}",
        )
    labels = _drop_duplicates(scan, log, labels)
    classes = sorted({item.label for item in labels.values()})
    _check_classes(log, labels, classes, archive_name)
    split_seed, split_info = _assign_splits(log, labels, classes, options)
    stats = _scan_stats(scan, reader)
    stats.update(layout=layout, labels_csv=labels_csv, split=split_info)
    if log.failed:
        return IngestResult(log, [], classes, stats, split_seed, archive_sha256, 0)
    rows = []
    for path in sorted(labels):
        image, item = scan.images[path], labels[path]
        # Images are stored and splits assigned whenever no error was found.
        assert image.stored is not None
        assert item.split is not None
        rows.append(
            ManifestRow(
                path=path,
                object_key=image.stored.object_key,
                label=item.label,
                split=item.split,
                sha256=image.stored.sha256,
                width=image.width,
                height=image.height,
            )
        )
    stats.update(
        dataset_statistics(
            [(row.label, row.split) for row in rows],
            [(scan.images[row.path].width, scan.images[row.path].height) for row in rows],
            classes,
        )
    )
    unique = {scan.images[path].source_sha256: scan.images[path].size for path in labels}
    return IngestResult(log, rows, classes, stats, split_seed, archive_sha256, sum(unique.values()))


def _scan_stats(scan: _Scan, reader: ArchiveReader) -> dict[str, Any]:
    return {
        "archive_format": reader.format.value,
        "entries": {
            "files": scan.files,
            "images": len(scan.images),
            "rejected_images": len(scan.rejected_images),
            "ignored_files": len(scan.other_files),
            "converted_images": scan.converted,
            "uncompressed_bytes": scan.total_bytes,
        },
    }


def _choose_layout(
    scan: _Scan, log: ProblemLog, options: IngestOptions, archive_name: str
) -> tuple[str, str | None]:
    csvs = sorted(scan.csvs)
    chosen: str | None = None
    if options.layout == "folders":
        layout = "folders"
    elif options.manifest is not None:
        layout, wanted = "csv", clean_entry_path(options.manifest)
        if wanted in scan.csvs:
            chosen = wanted
        else:
            log.error(
                options.manifest,
                ProblemCode.manifest_missing,
                f"no such CSV in the archive; CSV files found: {csvs or 'none'}",
            )
    elif not csvs:
        layout = "folders"
        if options.layout == "csv":
            log.error(
                archive_name,
                ProblemCode.manifest_missing,
                "layout is csv but the archive has no .csv file",
            )
    elif len(csvs) == 1:
        layout, chosen = "csv", csvs[0]
    else:
        layout = "csv"
        wanted_columns = {options.image_column.lower(), options.label_column.lower()}
        matching = [p for p in csvs if wanted_columns <= set(csv_header(scan.csvs[p]) or [])]
        if len(matching) == 1:
            chosen = matching[0]
        else:
            log.error(
                archive_name,
                ProblemCode.manifest_ambiguous,
                f"several CSV files could be the labels file: {matching or csvs}; name it with "
                "the `manifest` option",
            )
    for path in csvs:
        if path != chosen:
            log.warn(
                path, ProblemCode.ignored_file, "CSV file not used as the labels file; ignored"
            )
    return layout, chosen


class _PathIndex:
    """Finds an archive file from a CSV's image column: relative to the CSV's folder, from the
    archive root, by unique file name, or by unique name without extension (ISIC-style ids)."""

    def __init__(self, paths: Iterable[str], base: str) -> None:
        self._paths = set(paths)
        self._base = base
        self._by_name: dict[str, list[str]] = {}
        self._by_stem: dict[str, list[str]] = {}
        for path in sorted(self._paths):
            name = posixpath.basename(path)
            self._by_name.setdefault(name, []).append(path)
            self._by_stem.setdefault(posixpath.splitext(name)[0], []).append(path)

    def find(self, value: str) -> tuple[str | None, list[str]]:
        """(the path, []) when found; (None, candidates) when ambiguous; (None, []) when absent."""
        if unsafe_name_reason(value) is not None:
            return None, []
        wanted = clean_entry_path(value)
        for candidate in (posixpath.join(self._base, wanted) if self._base else wanted, wanted):
            if candidate in self._paths:
                return candidate, []
        name = posixpath.basename(wanted)
        table = self._by_name if posixpath.splitext(name)[1] else self._by_stem
        found = table.get(name, [])
        if len(found) == 1:
            return found[0], []
        return None, found


def _labels_from_csv(
    scan: _Scan, log: ProblemLog, options: IngestOptions, labels_csv: str
) -> dict[str, _Labelled]:
    columns = LabelColumns(options.image_column, options.label_column, options.split_column)
    rows = parse_label_csv(scan.csvs[labels_csv], entry=labels_csv, columns=columns, log=log)
    if rows is None:
        return {}
    with_split = [row for row in rows if row.split is not None]
    if with_split and len(with_split) != len(rows):
        for row in rows:
            if row.split is None:
                log.error(
                    f"{labels_csv}:{row.line}",
                    ProblemCode.invalid_split,
                    f"line {row.line} ({row.image}) has no split while other rows do; fill the "
                    "split of every row, or of none to let the service split",
                )
    index = _PathIndex([*scan.image_paths(), *scan.other_files], posixpath.dirname(labels_csv))
    labels: dict[str, _Labelled] = {}
    first_line: dict[str, int] = {}
    for row in rows:
        path, candidates = index.find(row.image)
        where = f"{labels_csv} line {row.line}"
        if path is None:
            if candidates:
                log.error(
                    row.image,
                    ProblemCode.ambiguous_file,
                    f"{where} could mean any of {candidates}; give the path inside the archive",
                )
            else:
                log.error(
                    row.image,
                    ProblemCode.missing_file,
                    f"{where} names a file that is not in the archive",
                )
            continue
        if path in scan.other_files:
            log.error(path, ProblemCode.not_an_image, f"{where} names a file that is not an image")
            continue
        if path in first_line:
            log.error(
                path,
                ProblemCode.duplicate_row,
                f"{where} lists this image again (first on line {first_line[path]})",
            )
            continue
        first_line[path] = row.line
        if path in scan.images:
            labels[path] = _Labelled(row.label, row.split)
    for path in sorted(set(scan.images) - set(first_line)):
        log.error(
            path,
            ProblemCode.unlisted_file,
            f"this image is not listed in {labels_csv}; add a row for it or remove it",
        )
    return labels


def _labels_from_folders(scan: _Scan, log: ProblemLog) -> dict[str, _Labelled]:
    paths = scan.image_paths()
    parts = {path: path.split("/") for path in paths}
    depth = _wrapper_depth(list(parts.values()))
    tops = {p[depth] for p in parts.values() if len(p) > depth + 1}
    by_split = (
        bool(tops)
        and all(normalize_split(t) for t in tops)
        and "train" in {normalize_split(t) for t in tops}
    )
    labels: dict[str, _Labelled] = {}
    for path, segments in parts.items():
        relative = segments[depth:]
        needed = 3 if by_split else 2
        if len(relative) < needed:
            where = "train/<class>/" if by_split else "<class>/"
            log.error(
                path,
                ProblemCode.no_class_folder,
                f"the image is not inside a class folder; put it under {where}",
            )
            continue
        if path not in scan.images:
            continue  # rejected already, with its own reason
        split = normalize_split(relative[0]) if by_split else None
        labels[path] = _Labelled(relative[1] if by_split else relative[0], split)
    return labels


def _wrapper_depth(paths: list[list[str]]) -> int:
    """How many leading folders every path shares (a zipped parent folder such as ``mydata/``),
    keeping at least ``class/image`` below, and never a split folder."""
    depth = 0
    while paths and all(len(p) - depth >= 3 for p in paths):
        tops = {p[depth] for p in paths}
        if len(tops) != 1 or normalize_split(next(iter(tops))):
            break
        depth += 1
    return depth


def _drop_duplicates(
    scan: _Scan, log: ProblemLog, labels: dict[str, _Labelled]
) -> dict[str, _Labelled]:
    by_content: dict[str, list[str]] = {}
    for path in sorted(labels):
        by_content.setdefault(scan.images[path].source_sha256, []).append(path)
    kept = dict(labels)
    for paths in by_content.values():
        if len(paths) < 2:
            continue
        names = {labels[p].label for p in paths}
        if len(names) > 1:
            for path in paths:
                others = [f"{p} ({labels[p].label})" for p in paths if p != path]
                log.error(
                    path,
                    ProblemCode.duplicate_across_classes,
                    f"identical to {', '.join(others)} but labelled {labels[path].label!r}; "
                    "keep the file in one class only",
                )
            continue
        for path in paths[1:]:
            log.warn(
                path,
                ProblemCode.duplicate_within_class,
                f"identical to {paths[0]} in class {labels[path].label!r}; only that copy is "
                "kept (a copy in two splits would leak test images into training)",
            )
            del kept[path]
    return kept


def _check_classes(
    log: ProblemLog, labels: dict[str, _Labelled], classes: list[str], archive_name: str
) -> None:
    members: dict[str, list[str]] = {}
    for path in sorted(labels):
        members.setdefault(labels[path].label, []).append(path)
    for name in classes:
        if len(members[name]) < 2:
            log.error(
                members[name][0],
                ProblemCode.too_few_images,
                f"class {name!r} has only 1 image; a class needs at least 2 to be split into "
                "train and test. Add images or remove the class",
            )
    if labels and len(classes) < 2:
        log.error(
            archive_name,
            ProblemCode.too_few_classes,
            f"found {len(classes)} class ({classes}); a classifier needs at least 2",
        )


def _assign_splits(
    log: ProblemLog, labels: dict[str, _Labelled], classes: list[str], options: IngestOptions
) -> tuple[int | None, dict[str, Any]]:
    given = [item.split for item in labels.values()]
    if given and all(split is not None for split in given):
        _check_given_splits(log, labels, classes)
        return None, {"source": "given"}
    if any(split is not None for split in given) or log.failed:
        return None, {"source": "none"}
    seed = options.split_seed if options.split_seed is not None else new_seed()
    assigned = stratified_split(
        {path: item.label for path, item in labels.items()},
        seed=seed,
        val_fraction=options.val_fraction,
        test_fraction=options.test_fraction,
    )
    for path, split in assigned.items():
        labels[path].split = split
    train = round(1 - options.val_fraction - options.test_fraction, 6)
    fractions = {"train": train, "val": options.val_fraction, "test": options.test_fraction}
    return seed, {"source": "generated", "seed": seed, "fractions": fractions}


def _check_given_splits(log: ProblemLog, labels: dict[str, _Labelled], classes: list[str]) -> None:
    present: dict[str, dict[str, str]] = {name: {} for name in classes}
    for path in sorted(labels):
        item = labels[path]
        assert item.split is not None
        present[item.label].setdefault(item.split, path)
    for name in classes:
        first = next(iter(present[name].values()))
        if "train" not in present[name]:
            log.error(
                first,
                ProblemCode.no_train_images,
                f"class {name!r} has no training images; move some of its images to train",
            )
        for split in SPLITS[1:]:
            if split not in present[name]:
                log.warn(
                    first,
                    ProblemCode.empty_split,
                    f"class {name!r} has no {split} images; its {split} metrics will be missing",
                )
