"""Manifests: which image is which class in which split. One row type, one reader, one writer.

Torch-free and shared by the service and the engine. A manifest is a CSV with the header
``path,object_key,label,split,sha256,width,height,group``: ``object_key`` (where the service keeps
the image bytes), ``sha256`` (of those bytes) and ``width``/``height`` (displayed size in pixels)
are empty for images the engine reads from a folder; ``group`` (the patient an image belongs to,
for splits that keep a patient's images together) is empty when images are split one by one.
``path`` is relative to the dataset root (an archive's own path for the service). The engine's
run folders and the service's ready datasets write the same header; a reader needs only ``path``
and ``label``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from foprokd.atomic import atomic_path
from foprokd.errors import ManifestInvalid
from foprokd.images import IMAGE_EXTENSIONS
from foprokd.splits import SPLITS, group_leaks, stratified_group_split, stratified_split

MANIFEST_HEADER: tuple[str, ...] = (
    "path",
    "object_key",
    "label",
    "split",
    "sha256",
    "width",
    "height",
    "group",
)


@dataclass(frozen=True)
class ManifestRow:
    """One image: ``path`` relative to the dataset root (or absolute), its class name ``label``,
    its ``split`` in ``SPLITS``; for a stored dataset also where and what its bytes are."""

    path: str
    label: str
    split: str
    object_key: str = ""
    sha256: str = ""
    width: int | None = None
    height: int | None = None
    group: str = ""


def class_order(labels: Iterable[str]) -> list[str]:
    """Distinct class names in index order: numeric names by value ("2" < "10"), then the rest."""

    def key(name: str) -> tuple[int, int, str]:
        return (0, int(name), "") if name.isdigit() else (1, 0, name)

    return sorted(set(labels), key=key)


def write_manifest(rows: Iterable[ManifestRow], handle: TextIO) -> None:
    """Write ``rows`` as a manifest CSV (header ``MANIFEST_HEADER``) to an open text handle."""
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(MANIFEST_HEADER)
    for row in rows:
        writer.writerow(
            [
                row.path,
                row.object_key,
                row.label,
                row.split,
                row.sha256,
                "" if row.width is None else row.width,
                "" if row.height is None else row.height,
                row.group,
            ]
        )


def save_manifest(rows: Iterable[ManifestRow], csv_path: Path) -> Path:
    """``write_manifest`` into ``csv_path`` atomically (temp file + rename); returns the path."""
    with atomic_path(csv_path) as temp, temp.open("w", newline="", encoding="utf-8") as handle:
        write_manifest(rows, handle)
    return csv_path


def parse_manifest(text: str, *, source: str, split_seed: int = 0) -> list[ManifestRow]:
    """The rows of a manifest CSV; ``source`` names it in errors (a path, a dataset).

    Extra columns are ignored. Without a ``split`` column (or with it empty everywhere) the rows
    get ``stratified_split`` by path with ``split_seed``; a partly filled one is an error.
    Raises ``ManifestInvalid`` saying what is wrong.
    """
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = {"path", "label"} - set(reader.fieldnames or ())
    if missing:
        raise ManifestInvalid(
            f"{source}: manifest needs columns path,label[,split]; missing {sorted(missing)}"
        )
    try:
        rows = [
            ManifestRow(
                path=r["path"].strip(),
                label=r["label"].strip(),
                split=(r.get("split") or "").strip(),
                object_key=(r.get("object_key") or "").strip(),
                sha256=(r.get("sha256") or "").strip().lower(),
                width=_optional_int(r.get("width")),
                height=_optional_int(r.get("height")),
                group=(r.get("group") or "").strip(),
            )
            for r in reader
        ]
    except (AttributeError, ValueError) as exc:
        raise ManifestInvalid(f"{source}: unreadable manifest row ({exc})") from exc
    if not rows:
        raise ManifestInvalid(f"{source}: manifest has no rows")
    if not any(row.split for row in rows):
        return assign_splits(rows, seed=split_seed)
    leaks = group_leaks({r.path: r.split for r in rows}, {r.path: r.group for r in rows})
    if leaks:
        named = ", ".join(f"{g} ({'/'.join(sorted(w))})" for g, w in list(leaks.items())[:5])
        raise ManifestInvalid(
            f"{source}: {len(leaks)} group(s) have images in more than one split, e.g. {named}; "
            "put all images of a group in one split"
        )
    bad = sorted({row.split for row in rows} - set(SPLITS))
    if bad:
        raise ManifestInvalid(f"{source}: split must be one of {SPLITS} for every row, found {bad}")
    return rows


def read_manifest(csv_path: Path, *, split_seed: int = 0) -> list[ManifestRow]:
    """``parse_manifest`` of a UTF-8 CSV file."""
    return parse_manifest(
        csv_path.read_text(encoding="utf-8"), source=str(csv_path), split_seed=split_seed
    )


def assign_splits(rows: Sequence[ManifestRow], *, seed: int) -> list[ManifestRow]:
    """``rows`` with the split ``stratified_split`` gives each path for ``seed``, or
    ``stratified_group_split`` when rows name their group."""
    labels = {row.path: row.label for row in rows}
    if any(row.group for row in rows):
        groups = {row.path: row.group for row in rows if row.group}
        splits = stratified_group_split(labels, groups, seed=seed)
    else:
        splits = stratified_split(labels, seed=seed)
    return [dataclasses.replace(row, split=splits[row.path]) for row in rows]


def scan_image_folder(root: Path, *, split_seed: int = 0) -> list[ManifestRow]:
    """Manifest of an ImageFolder tree: ``root/[split/]class/image``.

    The split level is recognised when the top-level folders are all in ``SPLITS`` (and include
    ``train``); otherwise the rows get ``stratified_split`` by path with ``split_seed``.
    """
    top = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not top:
        raise ManifestInvalid(f"{root}: no class folders found (expected root/[split/]class/image)")
    names = {p.name for p in top}
    if names <= set(SPLITS) and "train" in names:
        rows = [
            ManifestRow(path, label, split.name)
            for split in top
            for path, label in _class_images(root, split)
        ]
    else:
        rows = assign_splits(
            [ManifestRow(path, label, "") for path, label in _class_images(root, root)],
            seed=split_seed,
        )
    if not rows:
        raise ManifestInvalid(f"{root}: no images with extensions {sorted(IMAGE_EXTENSIONS)}")
    return rows


def _class_images(root: Path, parent: Path) -> list[tuple[str, str]]:
    """(path relative to ``root``, class name) for every image under ``parent/<class>/``."""
    found = []
    for class_dir in sorted(p for p in parent.iterdir() if p.is_dir()):
        if class_dir.name.startswith("."):
            continue
        for file in sorted(class_dir.rglob("*")):
            if file.is_file() and file.suffix.lower() in IMAGE_EXTENSIONS:
                found.append((file.relative_to(root).as_posix(), class_dir.name))
    return found


def _optional_int(value: str | None) -> int | None:
    text = (value or "").strip()
    return int(text) if text else None
