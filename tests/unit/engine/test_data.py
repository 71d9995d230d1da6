"""The engine's data path: manifests, splits, the decode-once cache and batched augmentation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from foprokd import image_cache
from foprokd.augment import BatchAugment
from foprokd.data import LabelledImages, index_batches, to_unit_float
from foprokd.errors import ImageDecodeError, ManifestInvalid
from foprokd.image_cache import ImageCache, decode_image
from foprokd.manifest import ManifestRow, read_manifest, scan_image_folder
from foprokd.reference import PilImageDataset
from foprokd.splits import stratified_split

SIZE = 16


def _save(path: Path, image: Image.Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """An ImageFolder with mixed modes and sizes: RGB JPEG, grayscale PNG, RGBA PNG, palette."""
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for i in range(4):
        rgb = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
        _save(root / "cat" / f"rgb_{i}.jpg", Image.fromarray(rgb))
        gray = rng.integers(0, 256, (30, 30), dtype=np.uint8)
        _save(root / "dog" / f"gray_{i}.png", Image.fromarray(gray, mode="L"))
        rgba = rng.integers(0, 256, (20, 20, 4), dtype=np.uint8)
        _save(root / "owl" / f"rgba_{i}.png", Image.fromarray(rgba, mode="RGBA"))
    palette = Image.fromarray(rng.integers(0, 4, (12, 12), dtype=np.uint8), mode="P")
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9] + [0] * 756)
    palette.info["transparency"] = 0
    _save(root / "owl" / "palette.png", palette)
    return root


def test_cache_round_trip_equals_direct_decode(image_folder: Path, tmp_path: Path) -> None:
    entries = scan_image_folder(image_folder, split_seed=3)
    cache = ImageCache.build(entries, root=image_folder, cache_dir=tmp_path / "c", image_size=SIZE)
    assert cache.classes == ["cat", "dog", "owl"]
    seen = 0
    for split in ("train", "val", "test"):
        images = cache.split(split)
        assert images.images.dtype == torch.uint8
        assert images.images.shape[1:] == (3, SIZE, SIZE)
        for row, entry in enumerate(cache.split_entries(split)):
            direct = torch.from_numpy(decode_image(image_folder / entry.path, SIZE))
            assert torch.equal(images.images[row], direct)
            assert images.classes[int(images.labels[row])] == entry.label
            seen += 1
    assert seen == len(entries) == 13


def test_grayscale_rgba_and_palette_become_rgb(image_folder: Path) -> None:
    gray_file = image_folder / "dog" / "gray_0.png"
    gray = decode_image(gray_file, SIZE)
    assert gray.shape == (3, SIZE, SIZE)
    assert np.array_equal(gray[0], gray[1])
    assert np.array_equal(gray[1], gray[2])
    with Image.open(gray_file) as raw:
        expected = np.asarray(raw.resize((SIZE, SIZE), Image.Resampling.BILINEAR))
    assert np.array_equal(gray[0], expected)

    rgba_file = image_folder / "owl" / "rgba_0.png"
    with Image.open(rgba_file) as raw:
        rgb_part = raw.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    assert np.array_equal(decode_image(rgba_file, SIZE), np.asarray(rgb_part).transpose(2, 0, 1))

    palette = decode_image(image_folder / "owl" / "palette.png", 12)
    colours = {tuple(int(v) for v in palette[:, y, x]) for y in range(12) for x in range(12)}
    assert colours <= {(255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9)}


def test_second_build_reuses_cache_without_decoding(
    image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = scan_image_folder(image_folder)
    first = ImageCache.build(entries, root=image_folder, cache_dir=tmp_path / "c", image_size=SIZE)
    assert first.decoded == len(entries)

    def refuse(path: Path, image_size: int) -> np.ndarray:
        raise AssertionError(f"decoded {path} although the cache is valid")

    monkeypatch.setattr(image_cache, "decode_image", refuse)
    progress: list[tuple[int, int]] = []
    second = ImageCache.build(
        entries,
        root=image_folder,
        cache_dir=tmp_path / "c",
        image_size=SIZE,
        on_progress=lambda done, total: progress.append((done, total)),
    )
    assert second.decoded == 0
    assert progress == [(len(entries), len(entries))]
    assert torch.equal(second.split("train").images, first.split("train").images)


def test_changed_file_or_size_rebuilds(image_folder: Path, tmp_path: Path) -> None:
    entries = scan_image_folder(image_folder)
    cache_dir = tmp_path / "c"
    ImageCache.build(entries, root=image_folder, cache_dir=cache_dir, image_size=SIZE)
    assert ImageCache.build(entries, root=image_folder, cache_dir=cache_dir, image_size=8).decoded

    png = next(e for e in entries if e.path.endswith(".png"))
    changed = image_folder / png.path
    Image.new("RGB", (5, 5), (1, 2, 3)).save(changed)
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    progress: list[int] = []
    rebuilt = ImageCache.build(
        entries,
        root=image_folder,
        cache_dir=cache_dir,
        image_size=SIZE,
        on_progress=lambda done, total: progress.append(done),
    )
    assert rebuilt.decoded == len(entries)
    assert progress == list(range(1, len(entries) + 1))
    row = [e.path for e in rebuilt.entries].index(png.path)
    assert torch.equal(
        torch.from_numpy(rebuilt.images[row][:, 0, 0].copy()),
        torch.tensor([1, 2, 3], dtype=torch.uint8),
    )


def test_missing_or_corrupt_image_is_named(image_folder: Path, tmp_path: Path) -> None:
    entries = scan_image_folder(image_folder)
    broken = image_folder / "cat" / "rgb_0.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(ImageDecodeError, match=r"rgb_0\.jpg"):
        ImageCache.build(entries, root=image_folder, cache_dir=tmp_path / "c", image_size=SIZE)
    assert not list((tmp_path / "c").glob("*.json"))
    broken.unlink()
    with pytest.raises(ImageDecodeError, match="missing"):
        ImageCache.build(entries, root=image_folder, cache_dir=tmp_path / "c", image_size=SIZE)


def test_manifest_with_and_without_split_column(tmp_path: Path) -> None:
    with_split = tmp_path / "a.csv"
    with_split.write_text("path,label,split,extra\nx.png,b,train,1\ny.png,a,test,2\n")
    assert read_manifest(with_split) == [
        ManifestRow("x.png", "b", "train"),
        ManifestRow("y.png", "a", "test"),
    ]
    without = tmp_path / "b.csv"
    without.write_text("path,label\n" + "".join(f"{i}.png,c{i % 2}\n" for i in range(20)))
    entries = read_manifest(without, split_seed=7)
    assert entries == read_manifest(without, split_seed=7)
    assert {e.split for e in entries} == {"train", "val", "test"}
    bad = tmp_path / "c.csv"
    bad.write_text("path,label,split\nx.png,a,train\ny.png,a,holdout\n")
    with pytest.raises(ManifestInvalid, match="holdout"):
        read_manifest(bad)


def test_image_folder_with_split_level(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("test", 1)):
        for label in ("b", "a"):
            for i in range(n):
                _save(tmp_path / split / label / f"{i}.png", Image.new("L", (4, 4)))
    entries = scan_image_folder(tmp_path)
    assert len(entries) == 8
    assert sum(e.split == "test" for e in entries) == 2
    assert ManifestRow("train/a/0.png", "a", "train") in entries


def test_stratified_split_fractions_per_class() -> None:
    labels = ["common"] * 100 + ["rare"] * 3 + ["pair"] * 2 + ["single"]
    items = {f"img{i:03d}.png": label for i, label in enumerate(labels)}
    assigned = stratified_split(items, seed=0)
    assert assigned == stratified_split(items, seed=0)
    assert assigned != stratified_split(items, seed=1)
    splits = [assigned[key] for key in items]
    common = splits[:100]
    assert (common.count("train"), common.count("val"), common.count("test")) == (70, 10, 20)
    assert sorted(splits[100:103]) == ["test", "train", "val"]
    assert sorted(splits[103:105]) == ["test", "train"]
    assert splits[105] == "train"


def test_index_batches_cover_every_index_once() -> None:
    gen = torch.Generator().manual_seed(0)
    batches = list(index_batches(10, 4, shuffle=True, generator=gen))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(10))
    assert all(b.dtype == torch.int64 for b in batches)
    again = list(index_batches(10, 4, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))
    dropped = list(index_batches(10, 4, shuffle=False, generator=None, drop_last=True))
    assert [b.tolist() for b in dropped] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_labelled_images_counts_and_validation() -> None:
    images = torch.zeros(5, 3, 4, 4, dtype=torch.uint8)
    labelled = LabelledImages(images, torch.tensor([0, 2, 2, 0, 2]), ["a", "b", "c"])
    assert len(labelled) == 5
    assert labelled.class_counts() == [2, 0, 3]
    with pytest.raises(ValueError, match="uint8"):
        LabelledImages(images.float(), torch.zeros(5, dtype=torch.int64), ["a"])


def _batch(n: int = 8) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 3, SIZE, SIZE), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )


def test_augment_shape_range_and_seed_determinism() -> None:
    x = _batch()
    augment = BatchAugment()
    torch.manual_seed(5)
    first = augment(x)
    torch.manual_seed(5)
    again = augment(x)
    torch.manual_seed(6)
    other = augment(x)
    assert first.shape == x.shape
    assert first.dtype == torch.float32
    assert float(first.min()) >= 0.0
    assert float(first.max()) <= 1.0
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert not torch.allclose(first, to_unit_float(x))


def test_augment_eval_mode_and_identity_settings_only_convert() -> None:
    x = _batch()
    expected = x.float() / 255
    assert torch.equal(BatchAugment().eval()(x), expected)
    identity = BatchAugment(
        scale=(1.0, 1.0), translate=0.0, rotate_deg=0.0, jitter=0.0, hflip=False, vflip=False
    )
    assert torch.allclose(identity(x), expected, atol=1e-6)
    with pytest.raises(TypeError, match="uint8"):
        to_unit_float(expected)


def test_flips_are_per_sample() -> None:
    x = _batch(32)
    only_hflip = BatchAugment(
        scale=(1.0, 1.0), translate=0.0, rotate_deg=0.0, jitter=0.0, vflip=False
    )
    torch.manual_seed(0)
    out = only_hflip(x)
    plain, flipped = to_unit_float(x), to_unit_float(x).flip(3)
    is_plain = [torch.allclose(o, p, atol=1e-6) for o, p in zip(out, plain, strict=True)]
    is_flipped = [torch.allclose(o, f, atol=1e-6) for o, f in zip(out, flipped, strict=True)]
    assert all(a or b for a, b in zip(is_plain, is_flipped, strict=True))
    assert 4 < sum(is_flipped) < 28


def test_one_geometric_op_per_sample() -> None:
    # A white image stays all-white only under zoom-in; a shift or rotation exposes black fill.
    white = torch.full((300, 3, SIZE, SIZE), 255, dtype=torch.uint8)
    geometric = BatchAugment(
        scale=(1.1, 1.2), translate=0.2, rotate_deg=45.0, jitter=0.0, hflip=False, vflip=False
    )
    torch.manual_seed(0)
    out = geometric(white)
    zoomed = (out > 0.999).flatten(1).all(dim=1)
    assert 60 < int(zoomed.sum()) < 140


def test_reference_dataset_matches_cache(image_folder: Path, tmp_path: Path) -> None:
    entries = scan_image_folder(image_folder)
    cache = ImageCache.build(entries, root=image_folder, cache_dir=tmp_path / "c", image_size=SIZE)
    reference = PilImageDataset(
        cache.split_entries("train"),
        root=image_folder,
        classes=cache.classes,
        image_size=SIZE,
        augment=False,
    )
    train = cache.split("train")
    for row in range(len(reference)):
        tensor, label = reference[row]
        assert label == int(train.labels[row])
        assert torch.allclose(tensor, to_unit_float(train.images[row : row + 1])[0], atol=1e-6)
    augmented = PilImageDataset(
        cache.split_entries("train"),
        root=image_folder,
        classes=cache.classes,
        image_size=SIZE,
        augment=True,
    )
    tensor, _ = augmented[0]
    assert tensor.shape == (3, SIZE, SIZE)
    assert float(tensor.max()) <= 1.0
