"""The validator on real archives: every attack and mistake of the issue ends with an error naming
the entry; good archives give exact class counts, splits and manifest rows."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from app.datasets.problems import MAX_REPORTED
from foprokd.synthetic import (
    ArchiveKind,
    Member,
    archive_bytes,
    encode_image,
    pixel_bomb_png,
    sample_dataset,
    texture_image,
)
from tests.unit.datasets.ingest.conftest import LIMITS, validate, validate_bytes

KINDS: list[ArchiveKind] = ["zip", "tar", "tar.gz"]


def png(seed: int = 0, class_index: int = 0, size: int = 32) -> bytes:
    return encode_image(texture_image(class_index, 4, np.random.default_rng(seed), size))


def two_classes(prefix: str = "", per_class: int = 3) -> list[Member]:
    """A minimal valid dataset: classes a and b with distinct images."""
    return [
        Member(f"{prefix}{label}/{n}.png", png(seed=10 * i + n, class_index=i))
        for i, label in enumerate(("a", "b"))
        for n in range(per_class)
    ]


# --- good archives -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layout", ["folders", "csv"])
def test_good_archive_gives_exact_counts_and_manifest_rows(kind: ArchiveKind, layout: str) -> None:
    sample = sample_dataset(layout=layout, with_splits=kind == "tar")  # type: ignore[arg-type]
    checked = validate(sample.members, kind, split_seed=7)
    assert checked.result.ok, checked.errors
    assert checked.result.classes == sample.classes
    assert checked.result.stats["class_totals"] == sample.class_counts
    if sample.split_counts is not None:
        assert checked.result.stats["class_counts"] == sample.split_counts
        assert checked.result.split_seed is None
    else:
        assert checked.result.split_seed == 7
    rows = checked.result.rows
    assert len(rows) == sample.num_images
    assert {row.object_key for row in rows} == set(checked.sink.objects)
    assert all(row.width == row.height == 32 for row in rows)
    assert checked.result.archive_sha256 is not None


def test_zipped_parent_folder_is_not_taken_for_a_class() -> None:
    checked = validate(two_classes(prefix="export/mydata/"))
    assert checked.result.ok, checked.errors
    assert checked.result.classes == ["a", "b"]
    assert {row.path for row in checked.result.rows} == {
        f"export/mydata/{c}/{n}.png" for c in "ab" for n in range(3)
    }


def test_split_folders_are_used_with_their_aliases() -> None:
    # Seeds from the position, not hash(): string hashing is salted per process, so
    # hash() % 10_000 made two members identical in ~1 run in 150.
    paths = [
        f"{split}/{label}/{n}.png"
        for split in ("Training", "validation", "test")
        for label in ("a", "b")
        for n in range(2)
    ]
    members = [Member(path, png(seed=seed)) for seed, path in enumerate(paths)]
    checked = validate(members)
    assert checked.result.ok, checked.errors
    assert checked.result.stats["split"] == {"source": "given", "unit": "image"}
    assert checked.result.stats["class_counts"] == {
        split: {"a": 2, "b": 2} for split in ("train", "val", "test")
    }


def test_generated_split_is_stratified_reproducible_and_recorded() -> None:
    sample = sample_dataset(head=40, imbalance=10)
    first = validate(sample.members, split_seed=123)
    again = validate(sample.members, "tar.gz", split_seed=123)
    other = validate(sample.members, split_seed=124)
    splits = {row.path: row.split for row in first.result.rows}
    assert splits == {row.path: row.split for row in again.result.rows}
    assert splits != {row.path: row.split for row in other.result.rows}
    counts = first.result.stats["class_counts"]
    for name, total in sample.class_counts.items():
        assert counts["val"][name] >= 1
        assert counts["test"][name] >= 1
        assert sum(counts[s][name] for s in counts) == total
    assert first.result.stats["split"] == {
        "source": "generated",
        "seed": 123,
        "fractions": {"train": 0.7, "val": 0.1, "test": 0.2},
        "unit": "image",
    }


def test_statistics_block_has_the_contract_keys() -> None:
    checked = validate(sample_dataset(head=40, imbalance=10).members, split_seed=1)
    stats = checked.result.stats
    train = stats["class_counts"]["train"]
    assert stats["imbalance_ratio"] == pytest.approx(max(train.values()) / min(train.values()))
    assert train["class_00"] == 28  # 40 images, 70 % train
    assert stats["groups"] == {"many": [], "medium": ["class_00"], "few": sorted(train)[1:]}
    assert sum(b["count"] for b in stats["image_size_histogram"]["bins"]) == len(
        checked.result.rows
    )


def test_csv_with_semicolons_bom_and_isic_style_ids_is_read() -> None:
    images = [Member(f"ISIC_{n:07d}.jpg", png(seed=n, class_index=n % 2)) for n in range(6)]
    rows = "".join(f"ISIC_{n:07d};{'MEL' if n % 2 else 'NV'}\r\n" for n in range(6))
    labels = Member("truth.csv", ("\ufeffImage;Diagnosis\r\n" + rows).encode())
    checked = validate([*images, labels], image_column="image", label_column="diagnosis")
    assert checked.result.ok, checked.errors
    assert checked.result.stats["class_totals"] == {"MEL": 3, "NV": 3}
    assert checked.result.stats["labels_csv"] == "truth.csv"


def test_csv_given_splits_are_kept() -> None:
    images = two_classes()
    rows = "\n".join(
        f"{m.name},{m.name[0]},{'train' if m.name.endswith(('0.png', '1.png')) else 'test'}"
        for m in images
    )
    checked = validate([*images, Member("labels.csv", f"image,label,split\n{rows}\n".encode())])
    assert checked.result.ok, checked.errors
    assert checked.result.stats["class_counts"]["test"] == {"a": 1, "b": 1}
    assert {w["code"] for w in checked.warnings} == {"empty_split"}  # no val images


# --- attacks on the archive structure ----------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_path_traversal_is_rejected(kind: ArchiveKind) -> None:
    checked = validate([*two_classes(), Member("a/../../etc/cron.d/x.png", png())], kind)
    assert not checked.result.ok
    assert checked.error_for("a/../../etc/cron.d/x.png")["code"] == "path_traversal"


@pytest.mark.parametrize("kind", KINDS)
def test_absolute_path_is_rejected(kind: ArchiveKind) -> None:
    checked = validate([*two_classes(), Member("/etc/passwd.png", png())], kind)
    assert checked.error_for("/etc/passwd.png")["code"] == "absolute_path"


def test_windows_absolute_path_is_rejected() -> None:
    checked = validate([*two_classes(), Member("C:\\Windows\\x.png", png())])
    assert checked.error_for("C:\\Windows\\x.png")["code"] == "absolute_path"


@pytest.mark.parametrize("kind", KINDS)
def test_symlink_is_rejected(kind: ArchiveKind) -> None:
    link = Member("a/evil.png", kind="symlink", target="/etc/shadow")
    checked = validate([*two_classes(), link], kind)
    error = checked.error_for("a/evil.png")
    assert error["code"] == "link"
    assert "symlink" in error["message"]


@pytest.mark.parametrize("kind", ["tar", "tar.gz"])
def test_hardlink_is_rejected(kind: ArchiveKind) -> None:
    link = Member("a/copy.png", kind="hardlink", target="a/0.png")
    checked = validate([*two_classes(), link], kind)
    assert checked.error_for("a/copy.png")["code"] == "link"


@pytest.mark.parametrize(
    ("kind", "member_kind"), [("zip", "chardev"), ("tar", "chardev"), ("tar.gz", "fifo")]
)
def test_devices_and_fifos_are_rejected(kind: ArchiveKind, member_kind: str) -> None:
    device = Member("a/dev.png", kind=member_kind)  # type: ignore[arg-type]
    checked = validate([*two_classes(), device], kind)
    assert checked.error_for("a/dev.png")["code"] == "special_file"


def zip_with(extra: zipfile.ZipInfo, data: bytes = b"") -> bytes:
    """``two_classes()`` as a zip, plus ``extra`` with its attributes exactly as given."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for member in two_classes():
            archive.writestr(member.name, member.data)
        archive.writestr(extra, data)
    return buffer.getvalue()


def zip_entry(name: str, mode: int, create_system: int = 3, dos_bits: int = 0) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = create_system
    info.external_attr = mode << 16 | dos_bits
    return info


# Type bits decide, whatever system the zip says made it: a hostile writer can claim MS-DOS.
@pytest.mark.parametrize("create_system", [3, 0], ids=["unix", "msdos"])
@pytest.mark.parametrize(
    ("mode", "code", "says"),
    [
        (stat.S_IFLNK | 0o777, "link", "symlink"),
        (stat.S_IFIFO | 0o644, "special_file", "fifo"),
        (stat.S_IFCHR | 0o600, "special_file", "device"),
        (stat.S_IFBLK | 0o600, "special_file", "device"),
        (stat.S_IFSOCK | 0o755, "special_file", "socket"),
        (0o160000 | 0o644, "special_file", "other"),  # a type no system defines (BSD whiteout)
    ],
)
def test_zip_entries_whose_type_bits_are_not_a_regular_file_are_rejected(
    mode: int, code: str, says: str, create_system: int
) -> None:
    entry = zip_entry("a/odd.png", mode, create_system)
    checked = validate_bytes(zip_with(entry, png(seed=77)), "upload.zip")
    error = checked.error_for("a/odd.png")
    assert error["code"] == code
    assert error["message"].startswith(f"{says} entries are not allowed")


@pytest.mark.parametrize(
    ("mode", "create_system", "dos_bits"),
    [
        (0o600, 3, 0),  # zipfile's writestr: permissions, no type
        (0o644, 3, 0),
        (stat.S_IFREG | 0o644, 3, 0),  # Info-ZIP, ZipFile.write
        (stat.S_IFREG | 0o644, 3, 0x8020),  # 7-Zip: its Unix-extension flag + DOS archive bit
        (0, 0, 0x20),  # MS-DOS: attributes only
        (0, 0, 0x01 | 0x20),  # MS-DOS read-only file
        (0, 11, 0),  # NTFS, no attributes at all
    ],
)
def test_zip_entries_that_are_regular_files_are_read(
    mode: int, create_system: int, dos_bits: int
) -> None:
    entry = zip_entry("a/9.png", mode, create_system, dos_bits)
    checked = validate_bytes(zip_with(entry, png(seed=77)), "upload.zip")
    assert checked.result.ok, checked.errors
    assert checked.result.stats["class_totals"] == {"a": 4, "b": 3}


@pytest.mark.parametrize(
    "entry",
    [
        zip_entry("a/sub", stat.S_IFDIR | 0o755),  # Unix directory type without the slash
        zip_entry("a/sub", 0, create_system=0, dos_bits=0x10),  # MS-DOS directory attribute
    ],
    ids=["unix", "msdos"],
)
def test_zip_directories_without_a_trailing_slash_are_directories(entry: zipfile.ZipInfo) -> None:
    checked = validate_bytes(zip_with(entry), "upload.zip")
    assert checked.result.ok, checked.errors
    assert checked.warnings == []  # not an empty "file" to ignore


@pytest.mark.parametrize("kind", KINDS)
def test_the_archive_root_directory_entry_is_accepted(kind: ArchiveKind) -> None:
    # `tar -czf x.tar.gz .` stores "." first; bsdtar's zip stores "./".
    root = "./" if kind == "zip" else "."
    members = [Member(root, kind="dir"), *two_classes(prefix="./")]
    checked = validate(members, kind)
    assert checked.result.ok, checked.errors
    assert checked.warnings == []


@pytest.mark.parametrize(
    ("name", "kind", "code"),
    [
        ("/", "zip", "absolute_path"),
        ("/", "tar", "unsafe_name"),  # tarfile strips a directory's slashes: an empty name
        ("../", "zip", "path_traversal"),
        ("../", "tar", "path_traversal"),
    ],
)
def test_directories_outside_the_root_are_still_rejected(
    name: str, kind: ArchiveKind, code: str
) -> None:
    checked = validate([Member(name, kind="dir"), *two_classes()], kind)
    assert checked.codes() == {code}


def test_a_file_named_like_the_root_is_rejected() -> None:
    checked = validate([*two_classes(), Member(".", b"x")], "tar")
    assert checked.codes() == {"unsafe_name"}


def test_a_tar_entry_of_an_unknown_type_is_read_as_a_regular_file() -> None:
    # POSIX: "an unrecognized typeflag shall be treated as a regular file"; tarfile agrees.
    image = png(seed=78)
    info = tarfile.TarInfo("a/9.png")
    info.type, info.size = b"Z", len(image)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in two_classes():
            regular = tarfile.TarInfo(member.name)
            regular.size = len(member.data)
            tar.addfile(regular, io.BytesIO(member.data))
        tar.addfile(info, io.BytesIO(image))
    checked = validate_bytes(buffer.getvalue(), "upload.tar")
    assert checked.result.ok, checked.errors
    assert checked.result.stats["class_totals"] == {"a": 4, "b": 3}
    small = validate_bytes(
        buffer.getvalue(), "upload.tar", limits=replace(LIMITS, max_file_bytes=len(image) - 1)
    )
    assert small.error_for("a/9.png")["code"] == "file_too_large"


def test_names_that_are_not_utf8_are_rejected_and_reported_readably() -> None:
    hostile = Member("a/\udcff\udcfe.png", png())  # what tarfile makes of undecodable bytes
    checked = validate([*two_classes(), hostile], "tar")
    assert checked.error_for("a/\\xff\\xfe.png")["code"] == "unsafe_name"


def test_duplicate_entry_names_are_rejected() -> None:
    checked = validate([*two_classes(), Member("a/0.png", png(seed=99))], "tar")
    assert checked.error_for("a/0.png")["code"] == "duplicate_entry"


@pytest.mark.parametrize("kind", KINDS)
def test_entry_over_the_per_file_limit_is_rejected(kind: ArchiveKind) -> None:
    limits = replace(LIMITS, max_file_bytes=2000)
    big = Member("a/big.png", png(size=96))
    assert len(big.data) > 2000
    checked = validate([*two_classes(), big], kind, limits=limits)
    error = checked.error_for("a/big.png")
    assert error["code"] == "file_too_large"
    assert "2000" in error["message"]


@pytest.mark.parametrize("kind", KINDS)
def test_total_uncompressed_limit_stops_validation(kind: ArchiveKind) -> None:
    members = two_classes(per_class=6)
    limits = replace(LIMITS, max_total_bytes=sum(len(m.data) for m in members[:5]))
    checked = validate(members, kind, limits=limits)
    assert checked.codes() == {"total_too_large"}
    assert checked.errors[0]["entry"] == "a/5.png"  # the first entry past the limit


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_zip_bomb_entry_over_the_compression_ratio_is_rejected(kind: ArchiveKind) -> None:
    bomb = Member("b/bomb.png", b"\0" * (3 * 1024 * 1024))
    checked = validate([*two_classes(), bomb], kind)
    error = checked.error_for("b/bomb.png")
    assert error["code"] == "compression_ratio"
    assert "zip bomb" in error["message"]


def test_incompressible_large_entry_passes_the_ratio_check() -> None:
    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(noise).save(out, format="PNG")
    assert len(out.getvalue()) > 1024 * 1024
    checked = validate([*two_classes(), Member("a/noise.png", out.getvalue())], "tar.gz")
    assert checked.result.ok, checked.errors


@pytest.mark.parametrize("kind", KINDS)
def test_more_files_than_the_limit_is_rejected(kind: ArchiveKind) -> None:
    limits = replace(LIMITS, max_entries=4)
    checked = validate(two_classes(per_class=3), kind, limits=limits)
    assert checked.codes() == {"too_many_files"}
    assert checked.errors[0]["entry"] == "b/1.png"  # the fifth file


def test_zip_with_too_many_files_is_refused_from_its_index_before_any_decoding() -> None:
    checked = validate(two_classes(per_class=3), limits=replace(LIMITS, max_entries=4))
    assert checked.codes() == {"too_many_files"}
    assert checked.sink.objects == {}


def test_truncated_archive_is_rejected_naming_where_it_broke() -> None:
    data = archive_bytes(two_classes(), "tar.gz")
    checked = validate_bytes(data[: len(data) // 2], "x.tgz")
    assert checked.codes() == {"corrupt_archive"}
    assert "after" in checked.errors[0]["message"]


# --- files that are not (good) images ----------------------------------------------------------


def test_non_image_files_are_ignored_with_a_warning() -> None:
    checked = validate(
        [*two_classes(), Member("a/notes.txt", b"seen by dr. x"), Member("__MACOSX/._a", b"x")]
    )
    assert checked.result.ok, checked.errors
    warned = {w["entry"]: w["code"] for w in checked.warnings}
    assert warned == {"a/notes.txt": "ignored_file", "__MACOSX/._a": "ignored_file"}


def test_non_image_named_by_the_manifest_is_rejected() -> None:
    images = two_classes()
    rows = "".join(f"{m.name},{m.name[0]}\n" for m in images) + "a/report.pdf,a\n"
    members = [
        *images,
        Member("a/report.pdf", b"%PDF-1.4"),
        Member("labels.csv", f"image,label\n{rows}".encode()),
    ]
    checked = validate(members)
    assert checked.error_for("a/report.pdf")["code"] == "not_an_image"


def test_undecodable_image_is_rejected() -> None:
    checked = validate([*two_classes(), Member("a/fake.jpg", b"this is not a jpeg at all")])
    assert checked.error_for("a/fake.jpg")["code"] == "not_decodable"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image_is_rejected(fmt: str) -> None:
    data = encode_image(texture_image(1, 4, np.random.default_rng(0), 64), fmt)
    checked = validate([*two_classes(), Member("a/cut.img.png", data[: len(data) * 2 // 3])])
    assert checked.error_for("a/cut.img.png")["code"] == "truncated_image"


def test_image_over_the_pixel_limit_is_rejected_before_decoding() -> None:
    bomb = pixel_bomb_png(4000, 4000)  # 16 MP in a few KB; the limit here is 1 MP
    assert len(bomb) < 20_000
    checked = validate([*two_classes(), Member("a/bomb.png", bomb)])
    error = checked.error_for("a/bomb.png")
    assert error["code"] == "too_many_pixels"
    assert "4000x4000" in error["message"]


def test_decompression_bomb_beyond_pil_own_limit_is_rejected() -> None:
    limits = replace(LIMITS, max_image_pixels=500_000_000)
    checked = validate(
        [*two_classes(), Member("a/huge.png", pixel_bomb_png(20_000, 20_000))], limits=limits
    )
    assert checked.error_for("a/huge.png")["code"] == "too_many_pixels"


def test_unsupported_image_format_is_rejected() -> None:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, format="GIF")
    checked = validate([*two_classes(), Member("a/anim.png", out.getvalue())])
    assert checked.error_for("a/anim.png")["code"] == "unsupported_image_format"


@pytest.mark.parametrize(
    ("mode", "fmt", "expected"),
    [("CMYK", "JPEG", "CMYK"), ("I;16", "PNG", "I;16"), ("L", "PNG", "grayscale")],
)
def test_cmyk_16bit_and_grayscale_are_converted_to_rgb_with_a_warning(
    mode: str, fmt: str, expected: str
) -> None:
    data = encode_image(texture_image(2, 4, np.random.default_rng(5), 32), fmt, mode)  # type: ignore[arg-type]
    checked = validate([*two_classes(), Member("a/odd.png", data)])
    assert checked.result.ok, checked.errors
    warning = next(w for w in checked.warnings if w["entry"] == "a/odd.png")
    assert warning["code"] == "converted"
    assert expected in warning["message"]
    row = next(r for r in checked.result.rows if r.path == "a/odd.png")
    stored = Image.open(io.BytesIO(checked.sink.objects[row.object_key].data))
    assert (stored.format, stored.mode, stored.size) == ("PNG", "RGB", (32, 32))
    assert stored.getextrema() != ((0, 0), (0, 0), (0, 0))


# --- duplicates --------------------------------------------------------------------------------


def test_duplicate_file_across_classes_is_an_error_naming_both() -> None:
    checked = validate([*two_classes(), Member("b/copy.png", two_classes()[0].data)])
    error = checked.error_for("b/copy.png")
    assert error["code"] == "duplicate_across_classes"
    assert "a/0.png" in error["message"]
    assert checked.error_for("a/0.png")["code"] == "duplicate_across_classes"


def test_duplicate_file_within_a_class_is_kept_once_with_a_warning() -> None:
    checked = validate([*two_classes(), Member("a/copy.png", two_classes()[0].data)])
    assert checked.result.ok, checked.errors
    warning = next(w for w in checked.warnings if w["entry"] == "a/copy.png")
    assert warning["code"] == "duplicate_within_class"
    assert "a/copy.png" not in {row.path for row in checked.result.rows}
    assert checked.result.stats["class_totals"] == {"a": 3, "b": 3}


# --- labels and the CSV manifest ---------------------------------------------------------------


def labelled(images: list[Member], rows: str, name: str = "labels.csv") -> list[Member]:
    return [*images, Member(name, rows.encode() if isinstance(rows, str) else rows)]


def test_manifest_row_naming_a_missing_file_is_rejected() -> None:
    images = two_classes()
    rows = "image,label\n" + "".join(f"{m.name},{m.name[0]}\n" for m in images) + "a/gone.png,a\n"
    checked = validate(labelled(images, rows))
    error = checked.error_for("a/gone.png")
    assert error["code"] == "missing_file"
    assert "labels.csv line 8" in error["message"]


def test_file_missing_from_the_manifest_is_rejected() -> None:
    images = two_classes()
    rows = "image,label\n" + "".join(f"{m.name},{m.name[0]}\n" for m in images[1:])
    checked = validate(labelled(images, rows))
    assert checked.error_for("a/0.png")["code"] == "unlisted_file"


def test_label_with_a_single_image_cannot_be_split() -> None:
    checked = validate([*two_classes(), Member("c/only.png", png(seed=77))])
    error = checked.error_for("c/only.png")
    assert error["code"] == "too_few_images"
    assert "'c'" in error["message"]


def test_a_single_class_is_rejected() -> None:
    checked = validate([Member(f"a/{n}.png", png(seed=n)) for n in range(4)])
    assert "too_few_classes" in checked.codes()


def test_manifest_that_is_not_utf8_is_rejected_with_its_line() -> None:
    images = two_classes()
    rows = b"image,label\n" + "".join(f"{m.name},{m.name[0]}\n" for m in images[:3]).encode()
    rows += "b/0.png,Läsion\n".encode("latin-1")
    checked = validate(labelled(images, rows))
    error = checked.error_for("labels.csv:5")
    assert error["code"] == "manifest_encoding"
    assert "UTF-8" in error["message"]


@pytest.mark.parametrize(
    ("body", "entry"),
    [
        ('image,label\na/0.png,"a\nb/0.png,b\n', "labels.csv:3"),  # unterminated quote
        ("image,label\na/0.png,a,extra\n", "labels.csv:2"),  # wrong field count
        ("picture,class\na/0.png,a\n", "labels.csv:1"),  # columns not found
    ],
)
def test_malformed_manifest_is_rejected_with_its_line(body: str, entry: str) -> None:
    checked = validate(labelled(two_classes(), body))
    assert checked.error_for(entry)["code"] == "manifest_malformed"


def test_partial_split_column_and_unknown_split_names_are_rejected() -> None:
    images = two_classes()
    rows = "image,label,split\n" + "".join(f"{m.name},{m.name[0]},train\n" for m in images[:4])
    rows += f"{images[4].name},b,\n{images[5].name},b,holdout\n"
    checked = validate(labelled(images, rows))
    assert checked.error_for("labels.csv:6")["code"] == "invalid_split"
    assert "holdout" in checked.error_for("labels.csv:7")["message"]


def test_given_splits_without_training_images_for_a_class_are_rejected() -> None:
    images = two_classes()
    rows = "image,label,split\n" + "".join(
        f"{m.name},{m.name[0]},{'test' if m.name[0] == 'b' else 'train'}\n" for m in images
    )
    checked = validate(labelled(images, rows))
    assert "no_train_images" in checked.codes()


def test_several_csv_files_need_the_manifest_option() -> None:
    images = two_classes()
    rows = "image,label\n" + "".join(f"{m.name},{m.name[0]}\n" for m in images)
    members = [
        *images,
        Member("labels.csv", rows.encode()),
        Member("old/labels.csv", rows.encode()),
    ]
    assert "manifest_ambiguous" in validate(members).codes()
    chosen = validate(members, manifest="old/labels.csv")
    assert chosen.result.ok, chosen.errors
    assert chosen.result.stats["labels_csv"] == "old/labels.csv"


def test_images_outside_class_folders_are_rejected() -> None:
    checked = validate([*two_classes(), Member("loose.png", png(seed=50))], layout="folders")
    assert checked.error_for("loose.png")["code"] == "no_class_folder"


def test_errors_are_capped_but_counted_exactly() -> None:
    members = [Member(f"../x{n}.png", b"x") for n in range(MAX_REPORTED + 30)]
    checked = validate([*two_classes(), *members], "tar")
    assert len(checked.errors) == MAX_REPORTED
    assert checked.result.log.error_counts["path_traversal"] == MAX_REPORTED + 30


def test_no_image_is_stored_once_an_error_is_known() -> None:
    members = [Member("a/../x.png", png()), *two_classes()]
    checked = validate(members, "tar")
    assert not checked.result.ok
    assert checked.sink.objects == {}


def test_skipped_entries_count_against_the_total_so_a_hidden_bomb_is_never_unpacked() -> None:
    # A .txt would be skipped, but skipping a tar.gz entry still means decompressing it.
    hidden = Member("a/readme.txt", b"\0" * (2 * 1024 * 1024))
    checked = validate(
        [*two_classes(), hidden], "tar.gz", limits=replace(LIMITS, max_total_bytes=1024 * 1024)
    )
    assert checked.codes() == {"total_too_large"}
    assert checked.errors[0]["entry"] == "a/readme.txt"


def test_links_count_against_the_entry_limit() -> None:
    links = [Member(f"a/l{n}.png", kind="symlink", target="0.png") for n in range(10)]
    checked = validate([*two_classes(), *links], "tar", limits=replace(LIMITS, max_entries=8))
    assert "too_many_files" in checked.codes()
