"""Validation of one uploaded archive: every entry checked, valid images stored, labels, splits,
manifest rows and statistics worked out, and every rejection named with its entry and reason.

Pure Python + PIL (runs on the cpu queue, never imports torch). The caller supplies where images
go (``ImageSink``) and hears about progress; ``workers.ingest`` wires it to the database and the
object store. An invalid result means the caller deletes what the sink stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.datasets.ingest.archive import ArchiveReader
from app.datasets.ingest.entries import (
    DicomReading,
    ImageSink,
    IngestLimits,
    ProgressFn,
    scan_archive,
)
from app.datasets.ingest.labels import label_and_split
from app.datasets.problems import ProblemCode, ProblemLog
from app.datasets.schemas import IngestOptions
from app.datasets.statistics import dataset_statistics
from foprokd.manifest import ManifestRow


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
        """True when no error was logged (the dataset is ready)."""
        return not self.log.failed

    @classmethod
    def rejected(cls, entry: str, code: ProblemCode, message: str) -> IngestResult:
        """The outcome for an archive refused as a whole (nothing was stored)."""
        log = ProblemLog()
        log.error(entry, code, message)
        return cls(log, [], [], {}, None, None, 0)


def validate_archive(
    reader: ArchiveReader,
    *,
    options: IngestOptions,
    limits: IngestLimits,
    sink: ImageSink,
    archive_name: str,
    group_salt: str,
    archive_bytes: int | None = None,
    progress: ProgressFn | None = None,
) -> IngestResult:
    """Check every entry of ``reader``, store valid images through ``sink`` and label them.

    ``group_salt`` keys the hash that names patient groups (``Settings.group_salt``);
    ``archive_name`` names archive-wide problems; ``archive_bytes`` is the archive's size (for
    progress). ``progress`` is called after every entry; an exception it raises aborts
    validation (used when the dataset was deleted meanwhile).
    """
    log = ProblemLog()
    scan = scan_archive(
        reader,
        limits=limits,
        sink=sink,
        log=log,
        archive_name=archive_name,
        dicom=DicomReading(group_salt, split_frames=options.dicom_frames == "split"),
        archive_bytes=archive_bytes,
        progress=progress,
    )
    stats = scan.stats(reader.format)
    if scan.fatal:
        return IngestResult(log, [], [], stats, None, None, 0)
    labelling = label_and_split(scan, log, options, archive_name, group_salt)
    stats.update(
        layout=labelling.layout, labels_csv=labelling.labels_csv, split=labelling.split_info
    )
    if log.failed:
        return IngestResult(
            log, [], labelling.classes, stats, labelling.split_seed, scan.archive_sha256, 0
        )
    rows = []
    labels = labelling.labels
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
                group=item.group or "",
            )
        )
    stats.update(
        dataset_statistics(
            [(row.label, row.split) for row in rows],
            [(scan.images[row.path].width, scan.images[row.path].height) for row in rows],
            labelling.classes,
            groups=[row.group or None for row in rows] if labelling.grouped else None,
        )
    )
    unique = {scan.images[path].source_sha256: scan.images[path].size for path in labels}
    return IngestResult(
        log,
        rows,
        labelling.classes,
        stats,
        labelling.split_seed,
        scan.archive_sha256,
        sum(unique.values()),
    )
