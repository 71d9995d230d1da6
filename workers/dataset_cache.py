"""A ready dataset, from the object store to files on this host the engine can decode.

The datasets domain stores every image as its own object and a manifest (``foprokd.manifest``)
naming each image's ``object_key`` and ``sha256``. A training run downloads the images once per
host into ``<cache>/datasets/<dataset_id>/files/<path>`` (each file checked against its sha256,
then renamed into place, so a file that exists is complete); the engine's pipeline then decodes
them once per image size into ``<cache>/images``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from app.core.storage import COPY_CHUNK_BYTES, ObjectNotFound, ObjectStore
from foprokd.atomic import atomic_path
from foprokd.errors import ManifestInvalid
from foprokd.manifest import ManifestRow, parse_manifest
from foprokd.pipeline import ManifestImages
from workers.failures import DatasetUnusable

DOWNLOAD_THREADS = 8

ProgressFn = Callable[[int, int], None]  # (done, total)


def stored_rows(data: bytes) -> list[ManifestRow]:
    """The rows of a ready dataset's manifest; raises ``DatasetUnusable`` naming what is wrong."""
    try:
        rows = parse_manifest(data.decode("utf-8"), source="its manifest")
    except (ManifestInvalid, UnicodeDecodeError) as exc:
        raise DatasetUnusable(str(exc)) from exc
    unstored = [row.path for row in rows if not row.object_key or not row.sha256]
    if unstored:
        raise DatasetUnusable(
            f"its manifest names no stored object or sha256 for {len(unstored)} image(s), "
            f"e.g. {unstored[0]!r}; upload it again"
        )
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
    rows: Sequence[ManifestRow],
    files_dir: Path,
    *,
    on_progress: ProgressFn | None = None,
) -> None:
    """Make sure every row's image is at ``local_path(files_dir, row.path)`` with its sha256."""
    todo = [row for row in rows if not local_path(files_dir, row.path).is_file()]
    total, done = len(rows), len(rows) - len(todo)
    if on_progress is not None:
        on_progress(done, total)
    with ThreadPoolExecutor(max_workers=DOWNLOAD_THREADS) as pool:
        for _ in pool.map(lambda row: _download(store, row, files_dir), todo):
            done += 1
            if on_progress is not None:
                on_progress(done, total)


def _download(store: ObjectStore, row: ManifestRow, files_dir: Path) -> None:
    target = local_path(files_dir, row.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with atomic_path(target) as tmp:
        try:
            source = store.open(row.object_key)
        except ObjectNotFound as exc:
            raise DatasetUnusable(f"image {row.path!r} is missing from the object store") from exc
        with source, tmp.open("wb") as out:
            while chunk := source.read(COPY_CHUNK_BYTES):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != row.sha256:
            raise DatasetUnusable(
                f"image {row.path!r} in the object store does not match its manifest sha256"
            )


def fetch_dataset(
    store: ObjectStore,
    *,
    dataset_id: str,
    manifest_key: str | None,
    classes: Sequence[str],
    cache_root: Path,
    on_progress: ProgressFn | None = None,
) -> ManifestImages:
    """Download (once per host) a ready dataset's images; the pipeline decodes them (once per
    size) under ``cache_root/images``. ``on_progress(done, total)`` counts images downloaded."""
    if not manifest_key:
        raise DatasetUnusable("it has no manifest; upload it again")
    try:
        manifest = store.get_bytes(manifest_key)
    except ObjectNotFound as exc:
        raise DatasetUnusable("its manifest is missing from the object store") from exc
    rows = stored_rows(manifest)
    files_dir = cache_root / "datasets" / dataset_id / "files"
    download_images(store, rows, files_dir, on_progress=on_progress)
    return ManifestImages(
        files_dir, rows, cache_dir=cache_root / "images", classes=list(classes) or None
    )
