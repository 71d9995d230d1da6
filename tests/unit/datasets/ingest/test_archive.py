"""Archive reading: formats sniffed from content, entry kinds, name safety, bounded reads."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from app.datasets.ingest.archive import (
    MAX_HEADER_BYTES,
    ArchiveError,
    ArchiveFormat,
    EntryKind,
    EntryTooLarge,
    EntryUnreadable,
    TooManyEntries,
    UnknownArchiveFormat,
    clean_entry_path,
    display_name,
    format_from_filename,
    open_archive,
    sniff_format,
    unsafe_name_reason,
)
from foprokd.synthetic import ArchiveKind, Member, archive_bytes

MEMBERS = [
    Member("d/", kind="dir"),
    Member("d/a.png", b"a" * 100),
    Member("d/link.png", kind="symlink", target="a.png"),
    Member("d/dev", kind="chardev"),
]


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz"])
def test_format_is_sniffed_from_the_content(kind: ArchiveKind) -> None:
    data = archive_bytes([Member("x.png", b"x")], kind)
    assert sniff_format(data[:512]) == ArchiveFormat(kind)


def test_other_content_is_not_an_archive() -> None:
    assert sniff_format(b"%PDF-1.7" + b"\0" * 600) is None
    with (
        pytest.raises(UnknownArchiveFormat),
        open_archive(io.BytesIO(b"GIF89a"), scratch_dir=Path("/tmp")),
    ):
        pass


def test_format_from_filename() -> None:
    assert format_from_filename("Skin.TGZ") is ArchiveFormat.tar_gz
    assert format_from_filename("a.tar.gz") is ArchiveFormat.tar_gz
    assert format_from_filename("a.tar") is ArchiveFormat.tar
    assert format_from_filename("a.zip") is ArchiveFormat.zip
    assert format_from_filename("a.rar") is None


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz"])
def test_entries_report_kinds_and_the_archive_digest(kind: ArchiveKind, tmp_path: Path) -> None:
    data = archive_bytes(MEMBERS, kind)
    with open_archive(io.BytesIO(data), scratch_dir=tmp_path) as reader:
        kinds = {}
        for entry in reader.entries():
            kinds[entry.name.rstrip("/")] = entry.kind
            if entry.kind is EntryKind.file:
                assert reader.read(entry, 1000).data == b"a" * 100
        digest = reader.finish()
    assert kinds == {
        "d": EntryKind.directory,
        "d/a.png": EntryKind.file,
        "d/link.png": EntryKind.symlink,
        "d/dev": EntryKind.device,
    }
    assert digest == hashlib.sha256(data).hexdigest()
    assert list(tmp_path.iterdir()) == []  # the zip scratch copy is gone


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_reads_stop_at_the_limit(kind: ArchiveKind, tmp_path: Path) -> None:
    data = archive_bytes([Member("big.png", b"\0" * 10_000)], kind)
    with open_archive(io.BytesIO(data), scratch_dir=tmp_path) as reader:
        entry = next(iter(reader.entries()))
        with pytest.raises(EntryTooLarge):
            reader.read(entry, 9_999)


def test_zip_entry_with_an_unsupported_compression_method_is_refused_by_name(
    tmp_path: Path,
) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("a.png", b"p" * 64)
    data = bytearray(buffer.getvalue())
    # Method 99 (AES/unknown) in the local header (offset 8) and the central directory (offset 10).
    data[8:10] = (99).to_bytes(2, "little")
    central = data.index(b"PK\x01\x02")
    data[central + 10 : central + 12] = (99).to_bytes(2, "little")
    with open_archive(io.BytesIO(bytes(data)), scratch_dir=tmp_path) as reader:
        entry = next(reader.entries())
        with pytest.raises(EntryUnreadable, match="compression method 99 is not supported"):
            reader.read(entry, 1_000)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("/etc/passwd", "absolute_path"),
        ("\\\\server\\share\\x.png", "absolute_path"),
        ("c:/x.png", "absolute_path"),
        ("a/../../x.png", "path_traversal"),
        ("a\\..\\x.png", "path_traversal"),
        ("..", "path_traversal"),
        ("a/\x00.png", "unsafe_name"),
        ("a/\udcff.png", "unsafe_name"),
        ("./", "unsafe_name"),
    ],
)
def test_unsafe_names(name: str, kind: str) -> None:
    reason = unsafe_name_reason(name)
    assert reason is not None
    assert reason[0] == kind


@pytest.mark.parametrize("name", [".", "./", ".//."])
def test_a_directory_may_name_the_archive_root(name: str) -> None:
    assert unsafe_name_reason(name, directory=True) is None
    assert clean_entry_path(name) == ""
    assert unsafe_name_reason(name) == ("unsafe_name", "the name is empty")  # a file may not


@pytest.mark.parametrize(
    ("name", "kind"), [("", "unsafe_name"), ("/", "absolute_path"), ("./..", "path_traversal")]
)
def test_a_directory_outside_the_root_is_still_unsafe(name: str, kind: str) -> None:
    reason = unsafe_name_reason(name, directory=True)
    assert reason is not None
    assert reason[0] == kind


@pytest.mark.parametrize(
    ("name", "clean"),
    [
        ("a/b.png", "a/b.png"),
        ("./a//b.png", "a/b.png"),
        ("a\\b.png", "a/b.png"),
        ("a..b/c.png", "a..b/c.png"),
    ],
)
def test_safe_names_are_normalised(name: str, clean: str) -> None:
    assert unsafe_name_reason(name) is None
    assert clean_entry_path(name) == clean


def test_display_name_escapes_what_cannot_be_shown() -> None:
    assert display_name("a/\udcff\x07.png") == "a/\\xff\\x07.png"
    assert len(display_name("x" * 1000)) == 300


def test_a_huge_tar_header_is_refused_before_it_is_read_into_memory(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("a/x.png")
        info.pax_headers = {"comment": "x" * (MAX_HEADER_BYTES + 1024)}
        tar.addfile(info, io.BytesIO(b""))
    assert len(buffer.getvalue()) < 100_000
    with (
        pytest.raises(ArchiveError, match="tar header is larger"),
        open_archive(io.BytesIO(buffer.getvalue()), scratch_dir=tmp_path) as reader,
    ):
        list(reader.entries())


def test_large_entries_pass_the_header_guard(tmp_path: Path) -> None:
    big = b"\1" * (MAX_HEADER_BYTES + 4096)
    data = archive_bytes([Member("a/big.bin", big), Member("a/small.png", b"s")], "tar.gz")
    with open_archive(io.BytesIO(data), scratch_dir=tmp_path) as reader:
        names = [entry.name for entry in reader.entries()]  # big.bin is skipped, not read
    assert names == ["a/big.bin", "a/small.png"]


def test_a_zip_declaring_too_many_entries_is_refused_before_its_index_is_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = archive_bytes([Member(f"a/{n}.png", b"x") for n in range(20)], "zip")

    def no_parsing(*_: object) -> None:
        raise AssertionError("the index was parsed")

    monkeypatch.setattr(zipfile, "ZipFile", no_parsing)
    with (
        pytest.raises(TooManyEntries, match="lists 20 entries"),
        open_archive(io.BytesIO(data), scratch_dir=tmp_path, max_entries=5),
    ):
        pass
