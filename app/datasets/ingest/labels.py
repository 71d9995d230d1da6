"""Labels and splits for the images an entry scan found: the layout (a labels CSV or class
folders), one label per image, duplicates, class sizes, the patient group of every image, and
its split (given by the user, or stratified once with a recorded seed; per group when images
have groups, so no patient is in two splits). Problems go to the scan's ``ProblemLog``."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from app.datasets.ingest.archive import clean_entry_path, unsafe_name_reason
from app.datasets.ingest.dicom import salted_group
from app.datasets.ingest.entries import EntryScan
from app.datasets.manifest import LabelColumns, csv_header, parse_label_csv
from app.datasets.problems import ProblemCode, ProblemLog
from app.datasets.schemas import IngestOptions
from foprokd.images import IMAGE_EXTENSIONS
from foprokd.splits import (
    SPLITS,
    group_leaks,
    new_seed,
    normalize_split,
    stratified_group_split,
    stratified_split,
)


@dataclass
class Labelled:
    """An image's class, split (None until assigned) and patient group (None: on its own)."""

    label: str
    split: str | None
    group: str | None = None


@dataclass(frozen=True)
class Labelling:
    """The outcome of labelling: which ``layout`` (``csv``/``folders``, ``labels_csv`` naming the
    CSV used), the kept images by path, the sorted ``classes`` and how splits were made."""

    layout: str
    labels_csv: str | None
    labels: dict[str, Labelled]
    classes: list[str]
    split_seed: int | None
    split_info: dict[str, Any]
    grouped: bool = False


def label_and_split(
    scan: EntryScan, log: ProblemLog, options: IngestOptions, archive_name: str, group_salt: str
) -> Labelling:
    """Label the valid images of ``scan``, drop duplicate copies, check the classes, find each
    image's group and assign splits; every problem is logged in ``log`` (``archive_name`` names
    archive-wide ones). ``group_salt`` keys the hash of a CSV's patient ids."""
    layout, labels_csv = _choose_layout(scan, log, options, archive_name)
    if layout == "csv" and labels_csv is not None:
        labels = _labels_from_csv(scan, log, options, labels_csv, group_salt)
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
    group_by = _assign_groups(scan, log, labels, options, archive_name)
    split_seed, split_info = _assign_splits(log, labels, classes, options, group_by)
    return Labelling(
        layout, labels_csv, labels, classes, split_seed, split_info, group_by != "none"
    )


def _choose_layout(
    scan: EntryScan, log: ProblemLog, options: IngestOptions, archive_name: str
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
    scan: EntryScan, log: ProblemLog, options: IngestOptions, labels_csv: str, group_salt: str
) -> dict[str, Labelled]:
    group_columns = (options.group_column,) if options.group_column else LabelColumns.group
    columns = LabelColumns(
        options.image_column, options.label_column, options.split_column, group_columns
    )
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
    # A row may name a multi-frame file split into frames: it labels every frame.
    files = [*scan.image_paths(), *scan.other_files, *scan.frames]
    index = _PathIndex(files, posixpath.dirname(labels_csv))
    labels: dict[str, Labelled] = {}
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
        # Patient ids are often medical record numbers: only their salted hash is kept.
        group = salted_group(row.group, group_salt, "csv") if row.group else None
        first_line[path] = row.line
        for image in scan.frames.get(path, [path]):
            first_line[image] = row.line
            if image in scan.images:
                labels[image] = Labelled(row.label, row.split, group)
    for path in sorted(set(scan.images) - set(first_line)):
        log.error(
            path,
            ProblemCode.unlisted_file,
            f"this image is not listed in {labels_csv}; add a row for it or remove it",
        )
    return labels


def _labels_from_folders(scan: EntryScan, log: ProblemLog) -> dict[str, Labelled]:
    paths = scan.image_paths()
    parts = {path: path.split("/") for path in paths}
    depth = _wrapper_depth(list(parts.values()))
    tops = {p[depth] for p in parts.values() if len(p) > depth + 1}
    by_split = (
        bool(tops)
        and all(normalize_split(t) for t in tops)
        and "train" in {normalize_split(t) for t in tops}
    )
    labels: dict[str, Labelled] = {}
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
        labels[path] = Labelled(relative[1] if by_split else relative[0], split)
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
    scan: EntryScan, log: ProblemLog, labels: dict[str, Labelled]
) -> dict[str, Labelled]:
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
    log: ProblemLog, labels: dict[str, Labelled], classes: list[str], archive_name: str
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


def _assign_groups(
    scan: EntryScan,
    log: ProblemLog,
    labels: dict[str, Labelled],
    options: IngestOptions,
    archive_name: str,
) -> str:
    """Set each image's group as ``options.group_by`` says; returns the rule used (``column``,
    ``dicom``, ``folder:N``, ``none``, or ``file`` when only frames of one file are grouped)."""
    from_csv = any(item.group for item in labels.values())
    from_dicom = any(scan.images[path].group for path in labels)
    rule = options.group_by
    if rule == "auto":
        rule = "column" if from_csv else "dicom" if from_dicom else "none"
    if rule == "column" and not from_csv:
        column = options.group_column or " or ".join(map(repr, LabelColumns.group))
        log.error(
            archive_name,
            ProblemCode.no_group,
            f"group_by is column but the labels CSV has no filled column {column}; add it or "
            "choose another group_by",
        )
    if rule == "dicom" and not from_dicom:
        log.error(
            archive_name,
            ProblemCode.no_group,
            "group_by is dicom but no DICOM file names a PatientID or StudyInstanceUID",
        )
    for path, item in labels.items():
        if rule == "dicom":
            item.group = scan.images[path].group
        elif rule.startswith("folder:"):
            item.group = _folder_group(path, int(rule.split(":")[1]), log)
        elif rule == "none":
            item.group = None
        source = scan.images[path].source_file
        if item.group is None and source is not None:
            item.group = f"file:{source}"  # the frames of one file never straddle two splits
    if rule == "none" and any(item.group for item in labels.values()):
        rule = "file"
    return rule


def _folder_group(path: str, level: int, log: ProblemLog) -> str | None:
    folders = path.split("/")[:-1]
    if len(folders) < level:
        log.error(
            path,
            ProblemCode.no_group,
            f"group_by is folder:{level} but the image is only {len(folders)} folder(s) deep; "
            "put every image under its patient's folder",
        )
        return None
    return folders[level - 1]


def _assign_splits(
    log: ProblemLog,
    labels: dict[str, Labelled],
    classes: list[str],
    options: IngestOptions,
    group_by: str,
) -> tuple[int | None, dict[str, Any]]:
    grouped = group_by != "none"
    unit = {"unit": "group", "group_by": group_by} if grouped else {"unit": "image"}
    given = [item.split for item in labels.values()]
    if given and all(split is not None for split in given):
        _check_given_splits(log, labels, classes)
        if grouped:
            _check_group_leaks(log, labels, options)
        return None, {"source": "given", **unit}
    if any(split is not None for split in given) or log.failed:
        return None, {"source": "none", **unit}
    seed = options.split_seed if options.split_seed is not None else new_seed()
    item_labels = {path: item.label for path, item in labels.items()}
    fractions = {"val_fraction": options.val_fraction, "test_fraction": options.test_fraction}
    if grouped:
        groups = {path: item.group for path, item in labels.items() if item.group}
        assigned = stratified_group_split(item_labels, groups, seed=seed, **fractions)
    else:
        assigned = stratified_split(item_labels, seed=seed, **fractions)
    for path, split in assigned.items():
        labels[path].split = split
    if grouped:
        # Whole groups can leave a class without train, val or test images: say so, as for a
        # user's split.
        _warn_single_group_classes(log, labels, classes)
        _check_given_splits(log, labels, classes)
    train = round(1 - options.val_fraction - options.test_fraction, 6)
    shares = {"train": train, "val": options.val_fraction, "test": options.test_fraction}
    return seed, {"source": "generated", "seed": seed, "fractions": shares, **unit}


def _check_group_leaks(
    log: ProblemLog, labels: dict[str, Labelled], options: IngestOptions
) -> None:
    leaks = group_leaks(
        {path: item.split for path, item in labels.items() if item.split is not None},
        {path: item.group for path, item in labels.items() if item.group},
    )
    report = log.error if options.on_group_leak == "refuse" else log.warn
    for group, where in leaks.items():
        places = ", ".join(f"{split} ({path})" for split, path in sorted(where.items()))
        report(
            group,
            ProblemCode.group_leak,
            f"group {group} has images in {places}; one patient in two splits leaks test "
            "images into training. Move them into one split (or upload with "
            "on_group_leak=warn to keep this split)",
        )


def _warn_single_group_classes(
    log: ProblemLog, labels: dict[str, Labelled], classes: list[str]
) -> None:
    groups: dict[str, set[str]] = {name: set() for name in classes}
    first: dict[str, str] = {}
    for path in sorted(labels):
        item = labels[path]
        groups[item.label].add(item.group or f"\0{path}")
        first.setdefault(item.label, path)
    for name in classes:
        if len(groups[name]) == 1:
            log.warn(
                first[name],
                ProblemCode.single_group_class,
                f"every image of class {name!r} comes from one patient, so all of them are in "
                "one split and the class has no held-out images; add images of other patients",
            )


def _check_given_splits(log: ProblemLog, labels: dict[str, Labelled], classes: list[str]) -> None:
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
