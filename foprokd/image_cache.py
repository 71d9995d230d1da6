"""Decode once, train many times: a manifest's images as a uint8 memmap at one resolution.

Resize policy (``foprokd.images``): plain resize of the whole image to ``S × S`` (PIL bilinear
with antialiasing), as in the paper's pipeline. The full field of view is kept (no lesion cropped
away); the aspect ratio is not.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from foprokd.atomic import atomic_path, write_json_atomic
from foprokd.data import LabelledImages
from foprokd.errors import ImageDecodeError, ManifestInvalid
from foprokd.images import RESIZE_POLICY, to_model_rgb
from foprokd.manifest import ManifestRow, class_order
from foprokd.splits import SPLITS

CACHE_FORMAT_VERSION = 1

ProgressFn = Callable[[int, int], None]


def load_rgb(path: Path, image_size: int) -> Image.Image:
    """Open one image file as an ``S × S`` RGB PIL image under the module's resize policy.

    EXIF orientation is applied; grayscale is replicated to RGB; an alpha channel is dropped
    (palette transparency is resolved to RGBA first so PIL does not guess).
    """
    with Image.open(path) as raw:
        return to_model_rgb(raw, image_size)


def decode_image(path: Path, image_size: int) -> np.ndarray:
    """Decode one image file to a uint8 (3, S, S) RGB array (see ``load_rgb``)."""
    return np.asarray(load_rgb(path, image_size), dtype=np.uint8).transpose(2, 0, 1).copy()


class ImageCache:
    """A manifest decoded once into a uint8 memmap ``(N, 3, S, S)`` plus a JSON index.

    Files live in ``cache_dir`` under the manifest's fingerprint (entries, file sizes and mtimes,
    ``S``, resize policy), so any number of datasets and sizes share one folder and a changed file
    triggers a rebuild. Rows are ordered train, val, test so each split is a contiguous,
    still memory-mapped slice.
    """

    def __init__(
        self,
        *,
        data_path: Path,
        entries: Sequence[ManifestRow],
        classes: Sequence[str],
        image_size: int,
        fingerprint: str,
        decoded: int,
    ) -> None:
        self.data_path = data_path
        self.entries = list(entries)
        self.classes = list(classes)
        self.image_size = image_size
        self.fingerprint = fingerprint
        # How many images this instance had to decode: 0 when an existing cache was reused.
        self.decoded = decoded
        class_index = {name: i for i, name in enumerate(self.classes)}
        self.labels = torch.tensor([class_index[e.label] for e in self.entries], dtype=torch.int64)
        # Copy-on-write mapping: reads come from the file, stray writes never reach it.
        self.images = np.memmap(
            data_path,
            dtype=np.uint8,
            mode="c",
            shape=(len(self.entries), 3, image_size, image_size),
        )

    @classmethod
    def build(
        cls,
        entries: Sequence[ManifestRow],
        *,
        root: Path,
        cache_dir: Path,
        image_size: int,
        classes: Sequence[str] | None = None,
        on_progress: ProgressFn | None = None,
        num_threads: int | None = None,
    ) -> ImageCache:
        """Decode ``entries`` (paths relative to ``root``) at ``image_size``, or reuse the cache.

        ``classes`` fixes the label order (default: ``class_order`` of the labels).
        ``on_progress(done, total)`` is called as images are decoded (once with total when reused).
        Raises ``ImageDecodeError`` naming the first missing or undecodable file.
        """
        if not entries:
            raise ManifestInvalid("the manifest has no images")
        bad = sorted({e.split for e in entries} - set(SPLITS))
        if bad:
            raise ManifestInvalid(f"unknown split(s) {bad}; expected {SPLITS}")
        ordered = sorted(entries, key=lambda e: SPLITS.index(e.split))
        class_list = (
            list(classes) if classes is not None else class_order([e.label for e in ordered])
        )
        unknown = sorted({e.label for e in ordered} - set(class_list))
        if unknown:
            raise ManifestInvalid(f"labels {unknown} are not in the class list {class_list}")

        files = [resolve_image_path(root, e.path) for e in ordered]
        fingerprint = _fingerprint(ordered, files, class_list, image_size)
        cache_dir.mkdir(parents=True, exist_ok=True)
        data_path = cache_dir / f"{fingerprint[:32]}.u8"
        index_path = cache_dir / f"{fingerprint[:32]}.json"
        nbytes = len(ordered) * 3 * image_size * image_size
        total = len(ordered)

        reused = _index_matches(index_path, fingerprint) and _size(data_path) == nbytes
        if reused:
            if on_progress is not None:
                on_progress(total, total)
        else:
            _decode_into(data_path, files, image_size, num_threads, on_progress)
            index = {
                "format": CACHE_FORMAT_VERSION,
                "fingerprint": fingerprint,
                "image_size": image_size,
                "resize_policy": RESIZE_POLICY,
                "count": total,
                "classes": class_list,
                "split_counts": {s: sum(e.split == s for e in ordered) for s in SPLITS},
            }
            write_json_atomic(index_path, index)
        return cls(
            data_path=data_path,
            entries=ordered,
            classes=class_list,
            image_size=image_size,
            fingerprint=fingerprint,
            decoded=0 if reused else total,
        )

    def __len__(self) -> int:
        return len(self.entries)

    def split(self, name: str) -> LabelledImages:
        """The images of split ``name`` as a memory-mapped ``LabelledImages`` (may be empty)."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        rows = [i for i, e in enumerate(self.entries) if e.split == name]
        start, stop = (rows[0], rows[-1] + 1) if rows else (0, 0)
        images = torch.from_numpy(self.images[start:stop])
        return LabelledImages(images, self.labels[start:stop], list(self.classes))

    def split_entries(self, name: str) -> list[ManifestRow]:
        """The manifest entries of split ``name`` in the same row order as ``split(name)``."""
        return [e for e in self.entries if e.split == name]


def _decode_into(
    data_path: Path,
    files: Sequence[Path],
    image_size: int,
    num_threads: int | None,
    on_progress: ProgressFn | None,
) -> None:
    """Decode ``files`` in order into a new uint8 memmap at ``data_path`` (atomically)."""
    total = len(files)
    with atomic_path(data_path) as tmp:
        target = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=(total, 3, image_size, image_size))
        threads = num_threads or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=threads) as pool:
            decoded = pool.map(lambda f: _decode_checked(f, image_size), files)
            for done, array in enumerate(decoded, start=1):
                target[done - 1] = array
                if on_progress is not None:
                    on_progress(done, total)
        target.flush()
        del target


def resolve_image_path(root: Path, path: str) -> Path:
    """A manifest path: absolute as it is, else relative to the dataset ``root``."""
    candidate = Path(path)
    return candidate if candidate.is_absolute() else root / candidate


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else -1


def _fingerprint(
    entries: Sequence[ManifestRow], files: Sequence[Path], classes: Sequence[str], size: int
) -> str:
    """sha256 over everything that changes the decoded bytes: entries, file stats, size, policy."""
    digest = hashlib.sha256()
    header = {
        "format": CACHE_FORMAT_VERSION,
        "policy": RESIZE_POLICY,
        "size": size,
        "classes": list(classes),
    }
    digest.update(json.dumps(header, sort_keys=True).encode())
    for entry, file in zip(entries, files, strict=True):
        try:
            stat = file.stat()
        except OSError as exc:
            raise ImageDecodeError(
                f"{file}: image listed in the manifest is missing ({exc})"
            ) from exc
        line = f"{entry.path}\t{entry.label}\t{entry.split}\t{stat.st_size}\t{stat.st_mtime_ns}\n"
        digest.update(line.encode())
    return digest.hexdigest()


def _index_matches(index_path: Path, fingerprint: str) -> bool:
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        return False
    return bool(index.get("fingerprint") == fingerprint)


def _decode_checked(file: Path, image_size: int) -> np.ndarray:
    try:
        return decode_image(file, image_size)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"{file}: cannot decode image ({exc})") from exc
