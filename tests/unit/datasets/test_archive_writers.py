"""Archives as real tools write them are accepted: Python's zipfile in its three styles, Info-ZIP,
7-Zip, bsdtar, GNU tar and an MS-DOS zip. Each packs the same ImageFolder (classes a and b) and
must validate clean, on its own and through upload + the validation task. The same writers
packing a symlink, a hardlink and a FIFO must still be refused.

The command-line writers come from Debian packages that ``make test`` installs
(scripts/ensure-tools.sh); a test skips, naming the package, only where that could not happen.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.datasets.ingest.archive import EntryKind, open_archive
from foprokd.synthetic import encode_image, texture_image
from tests.unit.datasets.conftest import Team
from tests.unit.datasets.ingest.conftest import validate_bytes
from tests.unit.datasets.test_ingest import post, row
from workers.ingest import ingest_dataset

CLASS_COUNTS = {"a": 3, "b": 2}
# A writer packs the folder (first argument) into an archive file (second) and returns its name.
Writer = Callable[[Path, Path], str]


def image_folder(root: Path) -> Path:
    """An ImageFolder of distinct PNGs: ``a/0.png .. a/2.png``, ``b/0.png, b/1.png``."""
    for index, (label, count) in enumerate(CLASS_COUNTS.items()):
        (root / label).mkdir(parents=True)
        for n in range(count):
            image = texture_image(index, 4, np.random.default_rng(10 * index + n), 32)
            (root / label / f"{n}.png").write_bytes(encode_image(image))
    return root


def images(folder: Path) -> list[Path]:
    """The folder's files, relative to it, in a stable order."""
    return sorted(path.relative_to(folder) for path in folder.rglob("*") if path.is_file())


def command(*names: str, package: str) -> str:
    """The first of ``names`` on PATH; skips (naming the Debian package) when none is."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(f"{names[0]} is not installed: apt-get install -y {package} (make test does it)")


def run_in(folder: Path, *argv: str) -> None:
    subprocess.run(argv, cwd=folder, check=True, capture_output=True, timeout=60)


def python_writestr_name(folder: Path, out: Path) -> str:
    # writestr with a bare name stores mode 0o600: permission bits and no file type.
    with zipfile.ZipFile(out / "writestr.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for path in images(folder):
            archive.writestr(path.as_posix(), (folder / path).read_bytes())
    return "writestr.zip"


def python_writestr_zipinfo(folder: Path, out: Path) -> str:
    # A bare ZipInfo carries no attributes; zipfile fills in 0o600 as for a name.
    with zipfile.ZipFile(out / "zipinfo.zip", "w") as archive:
        for path in images(folder):
            archive.writestr(zipfile.ZipInfo(path.as_posix()), (folder / path).read_bytes())
    return "zipinfo.zip"


def python_write(folder: Path, out: Path) -> str:
    # ZipFile.write copies the file's own st_mode (0o100644) and stores its directories too.
    with zipfile.ZipFile(out / "write.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for label in CLASS_COUNTS:
            archive.write(folder / label, label)
        for path in images(folder):
            archive.write(folder / path, path.as_posix())
    return "write.zip"


def msdos_zip(folder: Path, out: Path) -> str:
    # What Windows-era writers store: made by MS-DOS (0), only DOS attribute bits (0x20 archive,
    # 0x10 directory), no Unix mode in the high 16 bits.
    with zipfile.ZipFile(out / "msdos.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for label in CLASS_COUNTS:
            directory = zipfile.ZipInfo(f"{label}/")
            directory.create_system, directory.external_attr = 0, 0x10
            archive.writestr(directory, b"")
        for path in images(folder):
            info = zipfile.ZipInfo(path.as_posix().replace("/", "\\"))
            info.create_system, info.external_attr = 0, 0x20
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, (folder / path).read_bytes())
    return "msdos.zip"


def info_zip(folder: Path, out: Path) -> str:
    run_in(folder, command("zip", package="zip"), "-q", "-r", str(out / "infozip.zip"), ".")
    return "infozip.zip"


def seven_zip(folder: Path, out: Path) -> str:
    sevenz = command("7zz", "7z", package="7zip")
    run_in(folder, sevenz, "a", "-tzip", "-bd", str(out / "7zip.zip"), ".")
    return "7zip.zip"


def bsdtar_zip(folder: Path, out: Path) -> str:
    # bsdtar stores the root as a "./" entry first.
    bsdtar = command("bsdtar", package="libarchive-tools")
    run_in(folder, bsdtar, "--format", "zip", "-cf", str(out / "bsdtar.zip"), ".")
    return "bsdtar.zip"


def bsdtar_tar_gz(folder: Path, out: Path) -> str:
    bsdtar = command("bsdtar", package="libarchive-tools")
    run_in(folder, bsdtar, "-czf", str(out / "bsdtar.tar.gz"), ".")
    return "bsdtar.tar.gz"


def gnu_tar_gz(folder: Path, out: Path) -> str:
    # The most common way to pack a folder: `tar -czf x.tar.gz .`, whose first entry is ".".
    tar = command("tar", package="tar")
    run_in(folder, tar, "--format=gnu", "-czf", str(out / "gnu.tar.gz"), ".")
    return "gnu.tar.gz"


WRITERS: list[Writer] = [
    python_writestr_name,
    python_writestr_zipinfo,
    python_write,
    msdos_zip,
    info_zip,
    seven_zip,
    bsdtar_zip,
    bsdtar_tar_gz,
    gnu_tar_gz,
]


def written(writer: Writer, tmp_path: Path) -> tuple[str, bytes]:
    folder = image_folder(tmp_path / "folder")
    name = writer(folder, tmp_path)
    return name, (tmp_path / name).read_bytes()


@pytest.mark.parametrize("writer", WRITERS, ids=lambda writer: writer.__name__)
def test_the_archive_validates_clean_with_every_image(writer: Writer, tmp_path: Path) -> None:
    name, data = written(writer, tmp_path)
    checked = validate_bytes(data, name)
    assert checked.result.ok, checked.errors
    assert checked.errors == []
    assert checked.warnings == []
    assert checked.result.stats["class_totals"] == CLASS_COUNTS
    assert sorted(row.path for row in checked.result.rows) == [
        path.as_posix() for path in images(tmp_path / "folder")
    ]


@pytest.mark.parametrize("writer", WRITERS, ids=lambda writer: writer.__name__)
def test_the_upload_ends_ready(
    writer: Writer, tmp_path: Path, client: TestClient, team: Team
) -> None:
    name, data = written(writer, tmp_path)
    dataset_id = post(client, team, data, name=writer.__name__.replace("_", "-"), filename=name)
    assert ingest_dataset(dataset_id) == "ready", row(dataset_id).problems
    response = client.get(f"/v1/datasets/{dataset_id}", headers=team.auth())
    assert response.status_code == 200
    assert response.json()["status"] == "ready"
    assert row(dataset_id).stats["class_totals"] == CLASS_COUNTS


def test_python_writestr_stores_permission_bits_without_a_file_type(tmp_path: Path) -> None:
    """The premise of the writestr case: if zipfile ever stored a type, this test says so."""
    _, data = written(python_writestr_name, tmp_path)
    (tmp_path / "check.zip").write_bytes(data)
    with zipfile.ZipFile(tmp_path / "check.zip") as archive:
        modes = {info.external_attr >> 16 for info in archive.infolist()}
    assert modes == {0o600}
    with (
        (tmp_path / "check.zip").open("rb") as stream,
        open_archive(stream, scratch_dir=tmp_path) as reader,
    ):
        assert {entry.kind for entry in reader.entries()} == {EntryKind.file}


def hostile_folder(root: Path, *, special: bool) -> Path:
    """The image folder plus ``a/evil.png``, a symlink to /etc/passwd; with ``special`` also
    ``b/pipe.png`` (a FIFO) and ``b/copy.png`` (a hardlink to ``b/0.png``), which zips cannot
    hold."""
    folder = image_folder(root)
    (folder / "a" / "evil.png").symlink_to("/etc/passwd")
    if special:
        os.mkfifo(folder / "b" / "pipe.png")
        os.link(folder / "b" / "0.png", folder / "b" / "copy.png")
    return folder


# (archive name, program names, Debian package, arguments before the archive, tar-only members)
HOSTILE_WRITERS = [
    ("infozip.zip", ("zip",), "zip", ["-q", "-r", "-y"], False),  # -y: store links as links
    ("7zip.zip", ("7zz", "7z"), "7zip", ["a", "-tzip", "-snl", "-bd"], False),
    ("bsdtar.zip", ("bsdtar",), "libarchive-tools", ["--format", "zip", "-cf"], False),
    ("bsdtar.tar.gz", ("bsdtar",), "libarchive-tools", ["-czf"], True),
    ("gnu.tar.gz", ("tar",), "tar", ["-czf"], True),
]


@pytest.mark.parametrize(
    ("name", "programs", "package", "args", "special"),
    HOSTILE_WRITERS,
    ids=[writer[0] for writer in HOSTILE_WRITERS],
)
def test_links_and_fifos_packed_by_real_writers_are_refused(
    name: str,
    programs: tuple[str, ...],
    package: str,
    args: list[str],
    special: bool,
    tmp_path: Path,
) -> None:
    folder = hostile_folder(tmp_path / "folder", special=special)
    run_in(folder, command(*programs, package=package), *args, str(tmp_path / name), ".")
    checked = validate_bytes((tmp_path / name).read_bytes(), name)
    assert checked.error_for("a/evil.png")["code"] == "link"
    if special:
        assert checked.error_for("b/pipe.png")["code"] == "special_file"
        # Whichever of the two names the writer stores as the link, one of them is refused.
        linked = [e for e in checked.errors if e["entry"] in ("b/0.png", "b/copy.png")]
        assert [e["code"] for e in linked] == ["link"]
    assert not checked.result.ok
