"""Images in, uint8 tensors out: manifests, the decode-once memmap cache and batched augmentation.

Every image flows through the engine as a uint8 tensor ``(B, 3, S, S)`` at the training resolution
``S``. Decoding happens once per dataset (``ImageCache``); epochs then read a memory-mapped file and
augment whole batches on the training device (``BatchAugment``). ``PilImageDataset`` is the classic
per-sample PIL + torchvision pipeline, kept as the reference for the loading benchmark.

Resize policy: plain resize of the whole image to ``S × S`` (PIL bilinear with antialiasing), as
in the paper's pipeline. The full field of view is kept (no lesion cropped away); the aspect ratio
is not.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision import transforms

from foprokd.errors import EngineError
from foprokd.images import RESIZE_POLICY, to_model_rgb

SPLITS: tuple[str, ...] = ("train", "val", "test")
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
)
CACHE_FORMAT_VERSION = 1
# ITU-R 601 luma weights, the grayscale used by torchvision's colour jitter.
_LUMA = (0.299, 0.587, 0.114)

ProgressFn = Callable[[int, int], None]


class ManifestInvalid(EngineError):
    """A dataset manifest or image folder cannot be used as given; the message says why."""


class ImageDecodeError(ManifestInvalid):
    """An image of the manifest is missing or cannot be decoded; the message names the file."""


@dataclass(frozen=True)
class ManifestEntry:
    """One image of a dataset: ``path`` relative to the dataset root (or absolute), its class name
    ``label`` and its ``split`` in ``SPLITS``."""

    path: str
    label: str
    split: str


@dataclass
class LabelledImages:
    """One split of a dataset, in memory or memory-mapped.

    ``images``: uint8 (N, 3, S, S) on the CPU; ``labels``: int64 (N,) indices into ``classes``;
    ``classes``: index -> class name, the same list for every split of a dataset.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(
                f"images must be uint8 (N,3,S,S), got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must be ({self.images.shape[0]},), got {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def class_counts(self) -> list[int]:
        """Number of images per class, ``len == len(classes)`` (zeros for absent classes)."""
        return torch.bincount(self.labels, minlength=len(self.classes)).tolist()


def index_batches(
    n: int,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None,
    drop_last: bool = False,
) -> Iterator[torch.Tensor]:
    """Yield int64 index tensors covering ``range(n)`` in batches of ``batch_size``.

    With ``shuffle`` the order is ``torch.randperm`` drawn from ``generator`` (the global CPU RNG
    when ``None``); ``drop_last`` drops a final batch smaller than ``batch_size``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield order[start : start + batch_size]


def to_unit_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> float32 in [0, 1] on the same device: the eval path (no augment)."""
    if x.dtype != torch.uint8:
        raise TypeError(f"expected a uint8 image tensor, got {x.dtype}")
    return x.to(torch.float32).div_(255.0)


class BatchAugment(nn.Module):
    """The paper's augmentation for a whole batch on its own device.

    Per sample: ONE random choice of {scale in ``scale``, translate up to ``translate`` of the size,
    rotate up to ±``rotate_deg``} (one affine_grid/grid_sample, zero fill), colour jitter of
    strength ``jitter`` (brightness, contrast, saturation, applied in that order), then random
    horizontal and vertical flips (p = 0.5 each). Randomness comes from the *global* torch RNG of
    ``x.device``, so restoring checkpointed RNG states reproduces the same augmentations.
    In ``eval()`` mode it only converts to float.
    """

    def __init__(
        self,
        scale: tuple[float, float] = (0.95, 1.2),
        translate: float = 0.05,
        rotate_deg: float = 45.0,
        jitter: float = 0.25,
        hflip: bool = True,
        vflip: bool = True,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.translate = translate
        self.rotate_deg = rotate_deg
        self.jitter = jitter
        self.hflip = hflip
        self.vflip = vflip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, S, S) -> augmented float32 (B, 3, S, S) in [0, 1] on ``x.device``."""
        out = to_unit_float(x)
        if not self.training or out.shape[0] == 0:
            return out
        out = self._random_affine(out)
        if self.jitter > 0:
            out = self._colour_jitter(out)
        if self.hflip:
            out = _flip_where(out, dim=3)
        if self.vflip:
            out = _flip_where(out, dim=2)
        return out

    def _random_affine(self, x: torch.Tensor) -> torch.Tensor:
        b, device = x.shape[0], x.device
        choice = torch.randint(0, 3, (b,), device=device)
        lo, hi = self.scale
        scale = lo + (hi - lo) * torch.rand(b, device=device)
        # affine_grid works in [-1, 1] coordinates, so a shift of t·size is 2t there.
        shift = (torch.rand(b, 2, device=device) * 2 - 1) * (2 * self.translate)
        angle = (torch.rand(b, device=device) * 2 - 1) * math.radians(self.rotate_deg)

        # Masks instead of boolean indexing: no host-device sync on CUDA.
        one, zero = torch.ones_like(scale), torch.zeros_like(scale)
        # theta maps output to input coordinates: zooming in by s reads input at p / s.
        inv_scale = torch.where(choice == 0, 1.0 / scale, one)
        tx, ty = (torch.where(choice == 1, -shift[:, i], zero) for i in (0, 1))
        cos = torch.where(choice == 2, torch.cos(angle), one) * inv_scale
        sin = torch.where(choice == 2, torch.sin(angle), zero) * inv_scale
        theta = torch.stack(
            [torch.stack([cos, -sin, tx], dim=1), torch.stack([sin, cos, ty], dim=1)], dim=1
        )

        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _colour_jitter(self, x: torch.Tensor) -> torch.Tensor:
        b, device = x.shape[0], x.device
        factors = 1 + (torch.rand(3, b, 1, 1, 1, device=device) * 2 - 1) * self.jitter
        brightness, contrast, saturation = factors[0], factors[1], factors[2]
        luma = torch.tensor(_LUMA, device=device, dtype=x.dtype).view(1, 3, 1, 1)

        x = (x * brightness).clamp_(0, 1)
        mean_gray = (x * luma).sum(dim=1, keepdim=True).mean(dim=(2, 3), keepdim=True)
        x = (mean_gray + (x - mean_gray) * contrast).clamp_(0, 1)
        gray = (x * luma).sum(dim=1, keepdim=True)
        return (gray + (x - gray) * saturation).clamp_(0, 1)


def _flip_where(x: torch.Tensor, *, dim: int) -> torch.Tensor:
    """Flip each sample along ``dim`` with probability 0.5 (global RNG of ``x.device``)."""
    mask = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(dim), x)


def class_order(labels: Sequence[str]) -> list[str]:
    """Distinct class names in index order: numeric names by value ("2" < "10"), then the rest."""

    def key(name: str) -> tuple[int, int, str]:
        return (0, int(name), "") if name.isdigit() else (1, 0, name)

    return sorted(set(labels), key=key)


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


def read_manifest(csv_path: Path, *, split_seed: int = 0) -> list[ManifestEntry]:
    """Read a manifest CSV with columns ``path,label[,split]`` (extra columns are ignored).

    Without a ``split`` column (or with it empty everywhere) a stratified 70/10/20 split is made
    with ``split_seed``; a partially filled ``split`` column is an error.
    """
    with csv_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "label"} - set(reader.fieldnames or ())
        if missing:
            raise ManifestInvalid(
                f"{csv_path}: manifest needs columns path,label[,split]; missing {sorted(missing)}"
            )
        rows = [
            (r["path"].strip(), r["label"].strip(), (r.get("split") or "").strip()) for r in reader
        ]
    if not rows:
        raise ManifestInvalid(f"{csv_path}: manifest has no rows")
    given = [split for _, _, split in rows]
    if not any(given):
        splits = stratified_split([label for _, label, _ in rows], seed=split_seed)
        return [ManifestEntry(p, label, s) for (p, label, _), s in zip(rows, splits, strict=True)]
    bad = sorted({s for s in given if s not in SPLITS})
    if bad:
        raise ManifestInvalid(
            f"{csv_path}: split must be one of {SPLITS} for every row, found {bad}"
        )
    return [ManifestEntry(p, label, s) for p, label, s in rows]


def write_manifest(entries: Sequence[ManifestEntry], csv_path: Path) -> None:
    """Write ``entries`` as a ``path,label,split`` CSV (atomically: temp file + rename)."""
    tmp = csv_path.with_name(f".{csv_path.name}.tmp-{os.getpid()}")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        writer.writerows([e.path, e.label, e.split] for e in entries)
    tmp.replace(csv_path)


def scan_image_folder(root: Path, *, split_seed: int = 0) -> list[ManifestEntry]:
    """Manifest of an ImageFolder tree: ``root/[split/]class/image``.

    The split level is recognised when the top-level folders are all in ``SPLITS`` (and include
    ``train``); otherwise a stratified 70/10/20 split is made with ``split_seed``.
    """
    top = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not top:
        raise ManifestInvalid(f"{root}: no class folders found (expected root/[split/]class/image)")
    names = {p.name for p in top}
    if names <= set(SPLITS) and "train" in names:
        entries = [
            ManifestEntry(path, label, split.name)
            for split in top
            for path, label in _class_images(root, split)
        ]
    else:
        found = _class_images(root, root)
        splits = stratified_split([label for _, label in found], seed=split_seed)
        entries = [ManifestEntry(p, label, s) for (p, label), s in zip(found, splits, strict=True)]
    if not entries:
        raise ManifestInvalid(f"{root}: no images with extensions {sorted(IMAGE_EXTENSIONS)}")
    return entries


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


def stratified_split(
    labels: Sequence[str],
    *,
    seed: int,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
) -> list[str]:
    """Assign each item a split in ``SPLITS`` per class by ``fractions`` (train, val, test).

    Deterministic for a given ``seed``. A class with at least 3 items gets at least one in each
    split; with 2 items, one train and one test; a single item goes to train.
    """
    rng = np.random.default_rng(seed)
    out = [""] * len(labels)
    by_class: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    for name in class_order(labels):
        members = by_class[name]
        order = [members[j] for j in rng.permutation(len(members))]
        n = len(order)
        if n >= 3:
            n_val = max(1, round(fractions[1] * n))
            n_test = max(1, round(fractions[2] * n))
        else:
            n_val, n_test = 0, n - 1
        n_train = n - n_val - n_test
        if n_train < 1:
            raise ValueError(
                f"fractions {fractions} leave class {name!r} ({n} items) no train item"
            )
        for rank, index in enumerate(order):
            out[index] = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
    return out


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
        entries: Sequence[ManifestEntry],
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
        entries: Sequence[ManifestEntry],
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

        files = [_resolve(root, e.path) for e in ordered]
        fingerprint = _fingerprint(ordered, files, class_list, image_size)
        cache_dir.mkdir(parents=True, exist_ok=True)
        data_path = cache_dir / f"{fingerprint[:32]}.u8"
        index_path = cache_dir / f"{fingerprint[:32]}.json"
        nbytes = len(ordered) * 3 * image_size * image_size
        total = len(ordered)

        if _index_matches(index_path, fingerprint) and _size(data_path) == nbytes:
            if on_progress is not None:
                on_progress(total, total)
            return cls(
                data_path=data_path,
                entries=ordered,
                classes=class_list,
                image_size=image_size,
                fingerprint=fingerprint,
                decoded=0,
            )

        tmp = data_path.with_name(f".{data_path.name}.tmp-{os.getpid()}")
        try:
            target = np.memmap(
                tmp, dtype=np.uint8, mode="w+", shape=(total, 3, image_size, image_size)
            )
            threads = num_threads or min(8, os.cpu_count() or 1)
            with ThreadPoolExecutor(max_workers=threads) as pool:
                decoded = pool.map(lambda f: _decode_checked(f, image_size), files)
                for done, array in enumerate(decoded, start=1):
                    target[done - 1] = array
                    if on_progress is not None:
                        on_progress(done, total)
            target.flush()
            del target
            tmp.replace(data_path)
        finally:
            tmp.unlink(missing_ok=True)
        index = {
            "format": CACHE_FORMAT_VERSION,
            "fingerprint": fingerprint,
            "image_size": image_size,
            "resize_policy": RESIZE_POLICY,
            "count": total,
            "classes": class_list,
            "split_counts": {s: sum(e.split == s for e in ordered) for s in SPLITS},
        }
        _write_json_atomic(index_path, index)
        return cls(
            data_path=data_path,
            entries=ordered,
            classes=class_list,
            image_size=image_size,
            fingerprint=fingerprint,
            decoded=total,
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

    def split_entries(self, name: str) -> list[ManifestEntry]:
        """The manifest entries of split ``name`` in the same row order as ``split(name)``."""
        return [e for e in self.entries if e.split == name]


def _resolve(root: Path, path: str) -> Path:
    candidate = Path(path)
    return candidate if candidate.is_absolute() else root / candidate


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else -1


def _fingerprint(
    entries: Sequence[ManifestEntry], files: Sequence[Path], classes: Sequence[str], size: int
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


def _write_json_atomic(path: Path, payload: dict[str, object]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(path)


class PilImageDataset(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """Reference per-sample path: PIL decode + torchvision transforms on every access.

    Same resize policy as the cache; with ``augment`` the torchvision equivalent of
    ``BatchAugment``'s defaults. Items are (float (3, S, S) in [0, 1], class index).
    """

    def __init__(
        self,
        entries: Sequence[ManifestEntry],
        *,
        root: Path,
        classes: Sequence[str],
        image_size: int,
        augment: bool,
    ) -> None:
        self.files = [_resolve(root, e.path) for e in entries]
        index = {name: i for i, name in enumerate(classes)}
        self.labels = [index[e.label] for e in entries]
        self.image_size = image_size
        steps: list[Callable[..., object]] = []
        if augment:
            steps += [
                transforms.RandomChoice(
                    [
                        transforms.RandomAffine(0, scale=(0.95, 1.2)),
                        transforms.RandomAffine(0, translate=(0.05, 0.05)),
                        transforms.RandomRotation(45),
                    ]
                ),
                transforms.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.25),
                transforms.RandomHorizontalFlip(),
                transforms.RandomVerticalFlip(),
            ]
        steps.append(transforms.ToTensor())
        self.transform = transforms.Compose(steps)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = load_rgb(self.files[index], self.image_size)
        tensor = self.transform(image)
        assert isinstance(tensor, torch.Tensor)
        return tensor, self.labels[index]
