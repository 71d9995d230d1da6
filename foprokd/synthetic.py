"""Realistic sample datasets as archives: long-tailed classes of learnable textures, and hostile
entries on request.

Used by the tests, the demo and the benchmarks, so everything here is numpy + PIL (no torch):

* ``long_tail_counts`` — per-class image counts falling exponentially from the head class to the
  tail, as in dermoscopy or endoscopy collections (imbalance ratio = head / tail).
* ``texture_image`` — a class-dependent oriented grating with a class tint, random phase and noise,
  so a small CNN can learn the classes while no two images are byte-identical.
* ``sample_dataset`` — a whole dataset as archive ``Member``s, in ImageFolder layout
  (``[split/]class/image``) or images + a CSV manifest, optionally with a few corrupt files.
* ``write_archive`` / ``archive_bytes`` — members to ``.zip``, ``.tar`` or ``.tar.gz`` (a file is
  written atomically), including the entries a validator must refuse: ``..`` and absolute paths,
  symlinks, hardlinks, devices. ``archive_kind`` — the kind a file name asks for.
* ``pixel_bomb_png`` — a small, valid PNG whose header declares a huge canvas.

With ``image_format="DICOM"`` the images are DICOM files (``foprokd.synthetic_dicom``), several
per synthetic patient, each patient's images in one class and one split.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
from PIL import Image

from foprokd.atomic import atomic_path
from foprokd.synthetic_dicom import Patient, radiograph

ArchiveKind = Literal["zip", "tar", "tar.gz"]
MemberKind = Literal["file", "dir", "symlink", "hardlink", "chardev", "fifo"]
ImageMode = Literal["RGB", "L", "CMYK", "I;16"]

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
# Fixed timestamp so the same members always give byte-identical archives.
_EPOCH_2024 = 1_704_067_200
_ZIP_DATE = (2024, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Member:
    """One archive entry. ``name`` is written verbatim (hostile names included); ``target`` is the
    link target of a symlink or hardlink; ``compress`` deflates a zip entry (tar.gz compresses the
    whole stream regardless)."""

    name: str
    data: bytes = b""
    kind: MemberKind = "file"
    target: str = ""
    compress: bool = True


@dataclass
class SampleDataset:
    """A generated dataset: its archive members and what a correct validator must find.

    ``class_counts``: valid images per class; ``split_counts``: per split and class when the layout
    fixes the splits (``None`` when the service must split); ``corrupt``: archive paths of the
    deliberately broken images (not counted in ``class_counts``); ``manifest``: the CSV's path
    when the layout is ``csv``.
    """

    members: list[Member]
    classes: list[str]
    class_counts: dict[str, int]
    split_counts: dict[str, dict[str, int]] | None = None
    corrupt: list[str] = field(default_factory=list)
    manifest: str | None = None
    patients: dict[str, str] = field(default_factory=dict)  # DICOM path -> PatientID

    @property
    def num_images(self) -> int:
        """Valid images in the dataset (corrupt files excluded)."""
        return sum(self.class_counts.values())


def long_tail_counts(num_classes: int, head: int, imbalance: float) -> list[int]:
    """Images per class, largest first: ``n_i = round(head * imbalance ** (-i / (C - 1)))``.

    ``imbalance`` is the ratio of the head class to the tail class (>= 1); every class keeps at
    least 2 images so it can be split into train and test.
    """
    if num_classes < 1 or head < 2 or imbalance < 1:
        raise ValueError("need num_classes >= 1, head >= 2 and imbalance >= 1")
    if num_classes == 1:
        return [head]
    return [max(2, round(head * imbalance ** (-i / (num_classes - 1)))) for i in range(num_classes)]


def texture_image(
    class_index: int, num_classes: int, rng: np.random.Generator, size: int = 32
) -> Image.Image:
    """An RGB ``size × size`` image whose texture identifies its class.

    Class ``k`` is a sinusoidal grating at orientation ``pi * k / C`` whose spatial frequency and
    colour tint also depend on ``k``; each image draws its own phase, contrast and pixel noise.
    """
    theta = math.pi * class_index / max(num_classes, 1)
    frequency = 2.0 + 1.5 * (class_index % 3)
    y, x = np.mgrid[0:size, 0:size] / size
    phase = rng.uniform(0, 2 * math.pi)
    wave = np.sin(2 * math.pi * frequency * (x * math.cos(theta) + y * math.sin(theta)) + phase)
    hue = 2 * math.pi * class_index / max(num_classes, 1)
    tint = 0.5 + 0.4 * np.cos(hue + np.array([0.0, 2.1, 4.2]))
    contrast = rng.uniform(0.6, 1.0)
    pixels = 0.5 + 0.5 * contrast * wave[..., None] * tint + rng.normal(0, 0.08, (size, size, 3))
    return Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8))


def encode_image(image: Image.Image, fmt: str = "PNG", mode: ImageMode = "RGB") -> bytes:
    """``image`` encoded as ``fmt`` (PNG, JPEG, BMP, TIFF, WEBP) after conversion to ``mode``.

    ``I;16`` scales 8-bit values to the 16-bit range (PNG and TIFF only); ``CMYK`` needs JPEG or
    TIFF.
    """
    if mode == "I;16":
        grey = np.asarray(image.convert("L"), dtype=np.uint16) * 257
        converted = Image.fromarray(grey.astype(np.uint16))
    else:
        converted = image.convert(mode)
    out = io.BytesIO()
    options: dict[str, object] = {"quality": 95} if fmt == "JPEG" else {}
    converted.save(out, format=fmt, **options)
    return out.getvalue()


def sample_dataset(
    *,
    classes: Sequence[str] | int = 5,
    head: int = 24,
    imbalance: float = 8.0,
    size: int = 32,
    seed: int = 0,
    layout: Literal["folders", "csv"] = "folders",
    with_splits: bool = False,
    image_format: Literal["PNG", "JPEG", "DICOM"] = "PNG",
    corrupt: int = 0,
    root: str = "",
    max_images_per_patient: int = 4,
) -> SampleDataset:
    """A long-tailed dataset of ``texture_image``s as archive members.

    ``classes``: names, or a count (names ``class_00``, ...). ``layout="folders"``: files at
    ``root/class/img_0001.png``, or ``root/split/class/...`` with ``with_splits`` (a 70/10/20 cut
    per class, at least one val and test image when the class has 3 or more). ``layout="csv"``:
    files at ``root/images/<class>_0001.png`` listed in ``root/labels.csv``
    (``image,label[,split]``).
    ``corrupt``: that many extra files (truncated and garbage images) in the tail classes.
    ``root``: an optional top-level folder, as when users zip a whole directory.
    ``image_format="DICOM"``: ``.dcm`` files of synthetic patients with 1 to
    ``max_images_per_patient`` images each (``patients`` maps each file to its PatientID); with
    ``with_splits`` a patient's images share the split of its first image.
    """
    names = (
        [f"class_{i:02d}" for i in range(classes)] if isinstance(classes, int) else list(classes)
    )
    counts = long_tail_counts(len(names), head, imbalance)
    rng = np.random.default_rng(seed)
    prefix = f"{root.strip('/')}/" if root else ""
    extension = {"PNG": "png", "JPEG": "jpg", "DICOM": "dcm"}[image_format]
    members: list[Member] = []
    rows: list[tuple[str, str, str]] = []
    patients: dict[str, str] = {}
    split_counts: dict[str, dict[str, int]] = {s: dict.fromkeys(names, 0) for s in SPLIT_NAMES}
    for index, (name, count) in enumerate(zip(names, counts, strict=True)):
        splits = _fixed_splits(count)
        owners = _patients(count, max_images_per_patient, rng, start=len(set(patients.values())))
        for number in range(count):
            image = texture_image(index, len(names), rng, size)
            split = splits[number]
            if image_format == "DICOM":
                owner = owners[number]
                split = splits[owners.index(owner)]  # a patient's images stay in one split
                grey = np.asarray(image.convert("L"))
                data = radiograph(grey, rng, number, _patient(owner))
            else:
                data = encode_image(image, image_format)
            split_counts[split][name] += 1
            if layout == "csv":
                relative = f"images/{name}_{number:04d}.{extension}"
                rows.append((relative, name, split))
                path = prefix + relative
            elif with_splits:
                path = f"{prefix}{split}/{name}/img_{number:04d}.{extension}"
            else:
                path = f"{prefix}{name}/img_{number:04d}.{extension}"
            members.append(Member(path, data))
            if image_format == "DICOM":
                patients[path] = _patient(owners[number]).patient_id
    broken = _corrupt_members(names, prefix, layout, with_splits, corrupt, rng)
    members.extend(broken)
    manifest = None
    if layout == "csv":
        manifest = f"{prefix}labels.csv"
        listed = rows + [(m.name.removeprefix(prefix), _label_of(m.name), "train") for m in broken]
        members.append(Member(manifest, _csv_bytes(listed, with_splits)))
    return SampleDataset(
        members=members,
        classes=sorted(names),
        class_counts=dict(zip(names, counts, strict=True)),
        split_counts=split_counts if with_splits else None,
        corrupt=[m.name for m in broken],
        manifest=manifest,
        patients=patients,
    )


def _patients(count: int, most: int, rng: np.random.Generator, start: int) -> list[int]:
    """Owner number per image of one class: runs of 1..``most`` images, numbered from ``start``."""
    owners: list[int] = []
    number = start
    while len(owners) < count:
        owners += [number] * int(rng.integers(1, most + 1))
        number += 1
    return owners[:count]


def _patient(number: int) -> Patient:
    return Patient(
        patient_id=f"SYN{number:05d}",
        name=f"Synthetic^Patient{number:05d}",
        birth_date=f"19{50 + number % 50:02d}0{1 + number % 9}1{number % 10}",
        accession=f"ACC{number:07d}",
    )


def _fixed_splits(count: int) -> list[str]:
    n_val = max(1, round(0.1 * count)) if count >= 3 else 0
    n_test = max(1, round(0.2 * count)) if count >= 2 else 0
    return ["train"] * (count - n_val - n_test) + ["val"] * n_val + ["test"] * n_test


def _corrupt_members(
    names: list[str],
    prefix: str,
    layout: str,
    with_splits: bool,
    corrupt: int,
    rng: np.random.Generator,
) -> list[Member]:
    broken = []
    for number in range(corrupt):
        label = names[-1 - number % len(names)]
        good = encode_image(texture_image(0, len(names), rng, 32))
        # Alternate the two failures users really send: cut-off downloads and renamed non-images.
        data = good[: len(good) // 2] if number % 2 == 0 else rng.bytes(400)
        if layout == "csv":
            path = f"{prefix}images/{label}_corrupt_{number:02d}.png"
        elif with_splits:
            path = f"{prefix}train/{label}/corrupt_{number:02d}.png"
        else:
            path = f"{prefix}{label}/corrupt_{number:02d}.png"
        broken.append(Member(path, data))
    return broken


def _label_of(path: str) -> str:
    return path.rsplit("/", 1)[-1].split("_corrupt_")[0]


def _csv_bytes(rows: Iterable[tuple[str, str, str]], with_splits: bool) -> bytes:
    header = "image,label,split" if with_splits else "image,label"
    lines = [header]
    for image, label, split in rows:
        lines.append(f"{image},{label},{split}" if with_splits else f"{image},{label}")
    return ("\n".join(lines) + "\n").encode()


def pixel_bomb_png(width: int, height: int) -> bytes:
    """A valid 1-bit grayscale PNG of ``width × height`` black pixels, compressed to a few KB per
    megapixel row band: decoding it would allocate ``width * height`` bytes."""
    row = b"\x00" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    chunks = [compressor.compress(row * 256) for _ in range(height // 256)]
    chunks.append(compressor.compress(row * (height % 256)))
    chunks.append(compressor.flush())
    idat = b"".join(chunks)

    def chunk(tag: bytes, payload: bytes) -> bytes:
        body = tag + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def write_archive(path: Path, members: Iterable[Member], kind: ArchiveKind) -> Path:
    """Write ``members`` in order to ``path`` as a ``zip``, ``tar`` or ``tar.gz`` archive.

    Zip cannot hold hardlinks, so ``hardlink`` members raise ``ValueError`` there; symlinks and
    devices are encoded in the Unix mode bits, as Info-ZIP does.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed into place: a failure leaves no half archive.
    with atomic_path(path) as partial, partial.open("wb") as out:
        _write_members(out, members, kind)
    return path


def archive_kind(path: Path | str) -> ArchiveKind:
    """The archive kind a file name asks for: ``.zip``, ``.tar``, ``.tar.gz`` or ``.tgz``."""
    name = str(path).lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith((".tar.gz", ".tgz")):
        return "tar.gz"
    if name.endswith(".tar"):
        return "tar"
    raise ValueError(f"{path}: the archive name must end in .zip, .tar, .tar.gz or .tgz")


def archive_bytes(members: Iterable[Member], kind: ArchiveKind) -> bytes:
    """``members`` as an in-memory archive (see ``write_archive``); for small test archives."""
    buffer = io.BytesIO()
    _write_members(buffer, members, kind)
    return buffer.getvalue()


def _write_members(out: BinaryIO, members: Iterable[Member], kind: ArchiveKind) -> None:
    if kind == "zip":
        with zipfile.ZipFile(out, "w") as archive:
            for member in members:
                _add_zip_member(archive, member)
    else:
        with contextlib.ExitStack() as stack:
            target: BinaryIO | gzip.GzipFile = out
            if kind == "tar.gz":
                # A fixed header time and no file name (tarfile's "w:gz" writes the current
                # time), so the same members always give the same bytes.
                target = stack.enter_context(
                    gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=_EPOCH_2024)
                )
            with tarfile.open(fileobj=target, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for member in members:
                    _add_tar_member(tar, member)


def _add_zip_member(archive: zipfile.ZipFile, member: Member) -> None:
    modes = {
        "file": stat.S_IFREG | 0o644,
        "dir": stat.S_IFDIR | 0o755,
        "symlink": stat.S_IFLNK | 0o777,
        "chardev": stat.S_IFCHR | 0o644,
        "fifo": stat.S_IFIFO | 0o644,
    }
    if member.kind not in modes:
        raise ValueError(f"zip archives cannot hold a {member.kind} ({member.name})")
    info = zipfile.ZipInfo(member.name, date_time=_ZIP_DATE)
    info.external_attr = modes[member.kind] << 16
    info.compress_type = zipfile.ZIP_DEFLATED if member.compress else zipfile.ZIP_STORED
    info.create_system = 3  # Unix, so readers interpret the mode bits
    payload = member.target.encode() if member.kind == "symlink" else member.data
    archive.writestr(info, payload)


def _add_tar_member(tar: tarfile.TarFile, member: Member) -> None:
    info = tarfile.TarInfo(member.name)
    info.mtime = _EPOCH_2024
    info.mode = 0o644
    types = {
        "file": tarfile.REGTYPE,
        "dir": tarfile.DIRTYPE,
        "symlink": tarfile.SYMTYPE,
        "hardlink": tarfile.LNKTYPE,
        "chardev": tarfile.CHRTYPE,
        "fifo": tarfile.FIFOTYPE,
    }
    info.type = types[member.kind]
    info.linkname = member.target
    if member.kind == "file":
        info.size = len(member.data)
        tar.addfile(info, io.BytesIO(member.data))
    else:
        tar.addfile(info)
