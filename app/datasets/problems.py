"""What validation reports: one ``Problem`` per entry and reason, with stable codes.

Errors make a dataset ``invalid``; warnings are kept on a ``ready`` dataset for the user to read.
Both are stored as ``{"entry", "code", "message"}`` dicts: ``entry`` names the archive entry (or
the CSV line) the reason is about, ``code`` is stable for programs, ``message`` is for people and
says what to do next.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

# A broken 100k-image archive must not turn into a 100k-row JSON column; counts stay exact.
MAX_REPORTED = 200


class ProblemCode(StrEnum):
    """Why an entry was rejected (error) or changed/ignored (warning)."""

    # archive structure and attacks
    unsupported_archive = "unsupported_archive"
    corrupt_archive = "corrupt_archive"
    absolute_path = "absolute_path"
    path_traversal = "path_traversal"
    unsafe_name = "unsafe_name"
    link = "link"
    special_file = "special_file"
    encrypted = "encrypted"
    duplicate_entry = "duplicate_entry"
    too_many_files = "too_many_files"
    file_too_large = "file_too_large"
    total_too_large = "total_too_large"
    compression_ratio = "compression_ratio"
    # images
    not_decodable = "not_decodable"
    truncated_image = "truncated_image"
    unsupported_image_format = "unsupported_image_format"
    too_many_pixels = "too_many_pixels"
    converted = "converted"
    multi_frame = "multi_frame"
    # DICOM
    no_pixel_data = "no_pixel_data"
    dicom_multi_frame = "dicom_multi_frame"
    unsupported_transfer_syntax = "unsupported_transfer_syntax"
    burned_in_annotation = "burned_in_annotation"
    ignored_file = "ignored_file"
    not_an_image = "not_an_image"
    duplicate_across_classes = "duplicate_across_classes"
    duplicate_within_class = "duplicate_within_class"
    # labels, manifest and splits
    no_images = "no_images"
    no_class_folder = "no_class_folder"
    manifest_missing = "manifest_missing"
    manifest_ambiguous = "manifest_ambiguous"
    manifest_encoding = "manifest_encoding"
    manifest_malformed = "manifest_malformed"
    missing_label = "missing_label"
    invalid_split = "invalid_split"
    missing_file = "missing_file"
    ambiguous_file = "ambiguous_file"
    duplicate_row = "duplicate_row"
    unlisted_file = "unlisted_file"
    too_few_images = "too_few_images"
    too_few_classes = "too_few_classes"
    no_train_images = "no_train_images"
    empty_split = "empty_split"
    # patient groups
    no_group = "no_group"
    group_leak = "group_leak"
    single_group_class = "single_group_class"
    # service
    duplicate_upload = "duplicate_upload"
    internal_error = "internal_error"


@dataclass(frozen=True)
class Problem:
    """One reason about one entry (an archive path, a ``labels.csv:12`` CSV line or a class)."""

    entry: str
    code: ProblemCode
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"entry": self.entry, "code": self.code.value, "message": self.message}


@dataclass
class ProblemLog:
    """Errors and warnings of one validation; keeps the first ``MAX_REPORTED`` of each and counts
    all of them (per code)."""

    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    error_counts: dict[str, int] = field(default_factory=dict)
    warning_counts: dict[str, int] = field(default_factory=dict)

    def error(self, entry: str, code: ProblemCode, message: str) -> None:
        self._add(self.errors, self.error_counts, Problem(entry, code, message))

    def warn(self, entry: str, code: ProblemCode, message: str) -> None:
        self._add(self.warnings, self.warning_counts, Problem(entry, code, message))

    @property
    def failed(self) -> bool:
        return bool(self.error_counts)

    @staticmethod
    def _add(kept: list[Problem], counts: dict[str, int], problem: Problem) -> None:
        counts[problem.code.value] = counts.get(problem.code.value, 0) + 1
        if len(kept) < MAX_REPORTED:
            kept.append(problem)
