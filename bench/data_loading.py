"""Images/s of the engine's input path vs the classic per-sample PIL DataLoader, same run.

Engine path: decode once into the uint8 memmap cache, then per batch index the memmap and run
``BatchAugment`` on the device. Reference path: ``PilImageDataset`` (PIL decode + resize +
torchvision transforms per sample) behind a ``DataLoader``. Both produce augmented float [0, 1]
batches (B, 3, S, S) on the device; the ratio is steady-state epochs, the one-off cache build is
reported separately.

    python -m bench.data_loading --images 512 --image-size 224 --epochs 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from foprokd.augment import BatchAugment
from foprokd.data import LabelledImages, index_batches
from foprokd.image_cache import ImageCache
from foprokd.manifest import ManifestRow
from foprokd.reference import PilImageDataset


def write_jpegs(
    root: Path, count: int, source_size: int, num_classes: int = 4
) -> list[ManifestRow]:
    """``count`` photo-like JPEGs (smooth colour fields + noise, quality 90) in class folders."""
    rng = np.random.default_rng(0)
    entries = []
    coarse = 8
    for i in range(count):
        label = f"class_{i % num_classes}"
        low = rng.integers(0, 256, (coarse, coarse, 3), dtype=np.uint8)
        image = Image.fromarray(low).resize((source_size, source_size), Image.Resampling.BICUBIC)
        noisy = np.asarray(image, dtype=np.int16) + rng.integers(-12, 13, (*image.size, 3))
        path = root / label / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(path, quality=90)
        entries.append(ManifestRow(path.relative_to(root).as_posix(), label, "train"))
    return entries


def cached_batches(
    images: LabelledImages, augment: BatchAugment, batch_size: int, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The engine path: memmap rows -> device -> batched augmentation."""
    for index in index_batches(len(images), batch_size, shuffle=True, generator=None):
        x = images.images[index].to(device, non_blocking=True)
        yield augment(x), images.labels[index].to(device, non_blocking=True)


def reference_batches(
    loader: DataLoader[tuple[torch.Tensor, int]], device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The per-sample path: workers decode + transform, the main process moves to the device."""
    for x, y in loader:
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def images_per_second(
    make_epoch: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]],
    epochs: int,
    device: torch.device,
) -> float:
    """Throughput over ``epochs`` full passes (images/s), synchronising the device at the end."""
    seen = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for x, _ in make_epoch():
            seen += x.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return seen / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--images", type=int, default=512, help="generated JPEGs")
    parser.add_argument("--source-size", type=int, default=384, help="JPEG side, pixels")
    parser.add_argument("--image-size", type=int, default=224, help="training resolution S")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per path")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (reference)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory(prefix="foprokd-bench-") as tmp:
        root = Path(tmp) / "images"
        entries = write_jpegs(root, args.images, args.source_size)
        start = time.perf_counter()
        cache = ImageCache.build(
            entries, root=root, cache_dir=Path(tmp) / "cache", image_size=args.image_size
        )
        build_s = time.perf_counter() - start
        train = cache.split("train")
        augment = BatchAugment().to(device)
        dataset = PilImageDataset(
            entries, root=root, classes=cache.classes, image_size=args.image_size, augment=True
        )
        loader = DataLoader(
            dataset,
            batch_size=args.batch_size,
            shuffle=True,
            num_workers=args.workers,
            pin_memory=device.type == "cuda",
            persistent_workers=args.workers > 0,
        )
        # One untimed pass each: worker start-up, allocator and page-cache warm-up.
        images_per_second(lambda: reference_batches(loader, device), 1, device)
        images_per_second(
            lambda: cached_batches(train, augment, args.batch_size, device), 1, device
        )
        reference = images_per_second(
            lambda: reference_batches(loader, device), args.epochs, device
        )
        cached = images_per_second(
            lambda: cached_batches(train, augment, args.batch_size, device), args.epochs, device
        )

    print(
        f"{args.images} JPEGs {args.source_size}px -> S={args.image_size}, "
        f"batch {args.batch_size}, device {device}, reference workers {args.workers}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"one-off cache build: {build_s:.2f} s ({args.images / build_s:.0f} images/s decoded)")
    print(f"reference PIL per-sample DataLoader: {reference:8.0f} images/s")
    print(f"cached uint8 + batched augment:      {cached:8.0f} images/s")
    print(f"ratio cached / reference: {cached / reference:.2f}x")


if __name__ == "__main__":
    main()
