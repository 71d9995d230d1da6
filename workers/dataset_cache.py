"""A ready dataset, from the object store to the engine's decoded uint8 image cache.

The datasets domain stores every image as its own object and writes a manifest CSV with columns
``path,object_key,label,split,sha256,width,height``. A training run downloads the images once
per host into ``<cache>/datasets/<dataset_id>/files/<path>`` (each file checked against its
sha256, then renamed into place, so a file that exists is complete), and the engine's
``ImageCache`` decodes them once per image size into a memory map.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from app.core.storage import COPY_CHUNK_BYTES, ObjectNotFound, ObjectStore
from foprokd.data import ImageCache, ManifestEntry
from workers.failures import DatasetUnusable

MANIFEST_COLUMNS = frozenset({"path", "object_key", "label", "split", "sha256"})
DOWNLOAD_THREADS = 8

ProgressFn = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class StoredImage:
    """One manifest row: where the image goes locally, where it is stored, what it is."""

    path: str
    object_key: str
    label: str
    split: str
    sha256: str


def parse_manifest(data: bytes) -> list[StoredImage]:
    """The rows of a service manifest; raises ``DatasetUnusable`` naming what is wrong."""
    reader = csv.DictReader(io.StringIO(data.decode("utf-8")))
    missing = MANIFEST_COLUMNS - set(reader.fieldnames or ())
    if missing:
        raise DatasetUnusable(f"its manifest lacks the column(s) {sorted(missing)}")
    rows = [
        StoredImage(r["path"], r["object_key"], r["label"], r["split"], r["sha256"].lower())
        for r in reader
    ]
    if not rows:
        raise DatasetUnusable("its manifest lists no images")
    return rows


def local_path(root: Path, path: str) -> Path:
    """``root/path`` for a manifest path, refusing anything that would land outside ``root``."""
    parts = path.split("/")
    # "" catches absolute paths and "//"; "\\" would be a separator on Windows-made archives.
    if "\\" in path or any(part in ("", ".", "..") for part in parts):
        raise DatasetUnusable(f"its manifest has an unsafe image path {path!r}")
    return root.joinpath(*parts)


def download_images(
    store: ObjectStore,
    rows: Sequence[StoredImage],
    files_dir: Path,
    *,
    on_progress: ProgressFn | None = None,
) -> None:
    """Make sure every row's image is at ``local_path(files_dir, row.path)`` with its sha256."""
    todo = [row for row in rows if not local_path(files_dir, row.path).is_file()]
    total, done = len(rows), len(rows) - len(todo)
    if on_progress is not None:
        on_progress("downloading", done, total)
    with ThreadPoolExecutor(max_workers=DOWNLOAD_THREADS) as pool:
        for _ in pool.map(lambda row: _download(store, row, files_dir), todo):
            done += 1
            if on_progress is not None:
                on_progress("downloading", done, total)


def _download(store: ObjectStore, row: StoredImage, files_dir: Path) -> None:
    target = local_path(files_dir, row.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part-{os.getpid()}-{id(row)}")
    digest = hashlib.sha256()
    try:
        try:
            source = store.open(row.object_key)
        except ObjectNotFound as exc:
            raise DatasetUnusable(f"image {row.path!r} is missing from the object store") from exc
        with source, tmp.open("wb") as out:
            while chunk := source.read(COPY_CHUNK_BYTES):
                digest.update(chunk)
                out.write(chunk)
        if row.sha256 and digest.hexdigest() != row.sha256:
            raise DatasetUnusable(
                f"image {row.path!r} in the object store does not match its manifest sha256"
            )
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


def load_dataset(
    store: ObjectStore,
    *,
    dataset_id: str,
    manifest_key: str | None,
    classes: Sequence[str],
    cache_root: Path,
    image_size: int,
    on_progress: ProgressFn | None = None,
) -> ImageCache:
    """Download (once per host) and decode (once per size) a ready dataset's images."""
    if not manifest_key:
        raise DatasetUnusable("it has no manifest; upload it again")
    try:
        manifest = store.get_bytes(manifest_key)
    except ObjectNotFound as exc:
        raise DatasetUnusable("its manifest is missing from the object store") from exc
    rows = parse_manifest(manifest)
    files_dir = cache_root / "datasets" / dataset_id / "files"
    download_images(store, rows, files_dir, on_progress=on_progress)

    def decoded(done: int, total: int) -> None:
        if on_progress is not None:
            on_progress("decoding", done, total)

    return ImageCache.build(
        [ManifestEntry(row.path, row.label, row.split) for row in rows],
        root=files_dir,
        cache_dir=cache_root / "images",
        image_size=image_size,
        classes=list(classes) or None,
        on_progress=decoded,
    )
