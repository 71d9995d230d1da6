"""DICOM entries: pixels as a viewer shows them (values computed by hand from the DICOM
pipeline), every refusal with its reason, and nothing of the header kept but the allow-list."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import RLELossless

from app.datasets.ingest.dicom import read_dicom, salted_group
from app.datasets.ingest.images import ImageRejected
from foprokd.synthetic import Member
from foprokd.synthetic_dicom import Patient, dicom_file
from tests.unit.datasets.ingest.conftest import GROUP_SALT, LIMITS, validate

MAX_PIXELS = 1_000_000
PHI = Patient(
    patient_id="MRN-4471-XY",
    name="Doe^Jane^Q",
    birth_date="19610523",
    study_uid="1.2.826.0.1.3680043.10.1234.99.777",
    accession="ACC-55501",
)


def converted(data: bytes) -> np.ndarray:
    """The stored PNG of a DICOM file as an (H, W, 3) uint8 array."""
    image = read_dicom(data, max_pixels=MAX_PIXELS, group_salt=GROUP_SALT).image
    assert image.extension == "png"
    return np.asarray(Image.open(io.BytesIO(image.data)))


def grey(data: bytes) -> list[int]:
    """The first row of a grey image (all three channels must agree)."""
    rgb = converted(data)
    assert (rgb[..., 0] == rgb[..., 1]).all()
    assert (rgb[..., 1] == rgb[..., 2]).all()
    return rgb[0, :, 0].tolist()


def rejected(data: bytes) -> ImageRejected:
    with pytest.raises(ImageRejected) as caught:
        read_dicom(data, max_pixels=MAX_PIXELS, group_salt=GROUP_SALT)
    return caught.value


# --- pixels --------------------------------------------------------------------------------------


def test_ct_window_after_rescale_16_bit_signed() -> None:
    # HU = stored - 1024; window 40/400 (LINEAR: c' = 39.5, w' = 399):
    # 40 HU -> (0.5/399 + 0.5) * 255 = 127.8 -> 128; -160 HU is at the bottom edge -> 0;
    # 240 HU is above 239 -> 255; 140 HU -> (100.5/399 + 0.5) * 255 = 191.7 -> 192.
    stored = np.array([[1064, 864, 1264, 1164]], dtype=np.int16)
    data = dicom_file(stored, rescale=(1.0, -1024.0), window=(40.0, 400.0), modality="CT")
    assert grey(data) == [128, 0, 255, 192]


def test_12_bit_with_slope_and_window() -> None:
    # y = 2x - 1024; window 512.5/1025 -> c' = 512, w' = 1024: out = ((y - 512)/1024 + .5) * 255.
    # x=512: y=0 <= 0 -> 0; x=640: y=256 -> 63.75 -> 64; x=896: y=768 -> 191.25 -> 191;
    # x=1100: y=1176 > 1024 -> 255.
    stored = np.array([[512, 640, 896, 1100]], dtype=np.uint16)
    data = dicom_file(stored, bits_stored=12, rescale=(2.0, -1024.0), window=(512.5, 1025.0))
    assert grey(data) == [0, 64, 191, 255]


def test_no_window_stretches_the_image_range_and_monochrome1_is_inverted() -> None:
    # min..max 100..500 -> 0, 63.75 -> 64, 255; MONOCHROME1 shows low values white: 255 - v.
    stored = np.array([[100, 200, 500]], dtype=np.uint16)
    assert grey(dicom_file(stored)) == [0, 64, 255]
    assert grey(dicom_file(stored, photometric="MONOCHROME1")) == [255, 191, 0]
    # Plain 8-bit pixels are display values already: kept (inverted for MONOCHROME1).
    eight = np.array([[100, 200, 250]], dtype=np.uint8)
    assert grey(dicom_file(eight)) == [100, 200, 250]
    assert grey(dicom_file(eight, photometric="MONOCHROME1")) == [155, 55, 5]


def test_a_voi_lut_wins_over_the_window_and_its_output_range_sets_the_scale() -> None:
    # 8-bit LUT from stored value 10: below 10 -> first entry, past the end -> last entry.
    lut = Dataset()
    lut.LUTDescriptor = [4, 10, 8]
    lut.add_new("LUTData", "US", [0, 60, 180, 255])
    stored = np.array([[5, 10, 11, 12, 13, 40]], dtype=np.uint16)
    data = dicom_file(stored, window=(40.0, 400.0), extra={"VOILUTSequence": [lut]})
    assert grey(data) == [0, 0, 60, 180, 255, 255]
    # 16-bit LUT entries scale by 255 / 65535: 16383 -> 63.75 -> 64.
    wide = Dataset()
    wide.LUTDescriptor = [3, 0, 16]
    wide.add_new("LUTData", "US", [0, 16383, 65535])
    data = dicom_file(stored[:, :3] - 5, extra={"VOILUTSequence": [wide]})
    assert grey(data) == [0, 255, 255]
    data = dicom_file(np.array([[0, 1, 2]], np.uint16), extra={"VOILUTSequence": [wide]})
    assert grey(data) == [0, 64, 255]


def test_rgb_is_kept_and_ybr_full_is_converted() -> None:
    rgb = np.array([[[10, 200, 30], [255, 0, 128]]], dtype=np.uint8)
    assert converted(dicom_file(rgb, photometric="RGB")).tolist() == rgb.tolist()
    # JFIF YCbCr: R = Y + 1.402 (Cr - 128), G = Y - 0.344136 (Cb - 128) - 0.714136 (Cr - 128),
    # B = Y + 1.772 (Cb - 128). (128, 128, 200): R 228.9, G 76.6, B 128.
    ybr = np.array([[[100, 128, 128], [128, 128, 200]]], dtype=np.uint8)
    assert converted(dicom_file(ybr, photometric="YBR_FULL")).tolist() == [
        [[100, 100, 100], [229, 77, 128]]
    ]


def test_palette_colour_is_looked_up_and_scaled_to_8_bits() -> None:
    ramp = np.arange(256, dtype=np.uint16) * 257  # 16-bit entries k * 257 -> 8-bit k
    red, green, blue = ramp, ramp[::-1].copy(), np.full(256, 257 * 7, np.uint16)
    indices = np.array([[0, 1, 200]], dtype=np.uint8)
    data = dicom_file(indices, photometric="PALETTE COLOR", palette=(red, green, blue))
    assert converted(data).tolist() == [[[0, 255, 7], [1, 254, 7], [200, 55, 7]]]


def test_rle_lossless_decodes_to_the_same_pixels() -> None:
    stored = np.array([[100, 200, 500]], dtype=np.uint16)
    ds = dcmread(io.BytesIO(dicom_file(stored)))
    ds.compress(RLELossless)  # pydicom's own RLE encoder
    out = io.BytesIO()
    ds.save_as(out)
    assert grey(out.getvalue()) == [0, 64, 255]


def test_jpeg_baseline_grey_and_colour_decode() -> None:
    # Flat 8x8 blocks survive JPEG exactly (only their DC coefficient is non-zero).
    blocks = np.full((16, 16), 200, np.uint8)
    blocks[:8, :8] = 50
    out = converted(dicom_file(blocks, compression="jpeg"))[..., 0]
    assert np.abs(out.astype(int) - blocks).max() <= 1
    colour = np.zeros((16, 16, 3), np.uint8)
    colour[...] = (200, 40, 60)
    decoded = converted(dicom_file(colour, compression="jpeg"))
    assert np.abs(decoded.astype(int) - colour).max() <= 3


def test_a_sample_style_image_shows_the_original_grey_values() -> None:
    from foprokd.synthetic_dicom import radiograph

    rng = np.random.default_rng(0)
    original = rng.integers(0, 256, (12, 12), dtype=np.uint8)
    original[0, :2] = (0, 255)  # the full range, as the sample's textures have
    for style in range(3):
        shown = converted(radiograph(original, rng, style, PHI))[..., 0]
        assert np.abs(shown.astype(int) - original).max() <= (8 if style == 2 else 2), style


# --- refusals ------------------------------------------------------------------------------------


def test_refusals_name_their_reason() -> None:
    frame = np.zeros((4, 4), np.uint8)
    multi = rejected(dicom_file(np.zeros((3, 4, 4), np.uint8), frames=3))
    assert multi.kind == "dicom_multi_frame"
    assert "3 frames" in multi.message
    no_pixels = rejected(dicom_file(frame, with_pixels=False))
    assert no_pixels.kind == "no_pixel_data"
    good = dicom_file(np.arange(64, dtype=np.uint16).reshape(8, 8))
    truncated = rejected(good[:-20])
    assert truncated.kind == "truncated_image"
    mpeg = rejected(dicom_file(frame, transfer_syntax="1.2.840.10008.1.2.4.100"))
    assert mpeg.kind == "unsupported_transfer_syntax"
    assert "MPEG2 Main Profile / Main Level" in mpeg.message
    burned = rejected(dicom_file(frame, extra={"BurnedInAnnotation": "YES"}))
    assert burned.kind == "burned_in_annotation"
    assert rejected(b"\0" * 128 + b"DICM" + b"\xff" * 40).kind == "not_decodable"
    big = rejected(dicom_file(np.zeros((1100, 1000), np.uint8)))
    assert big.kind == "too_many_pixels"


def test_every_acceptance_case_ends_as_a_per_entry_problem_in_an_archive() -> None:
    frame = np.arange(16, dtype=np.uint8).reshape(4, 4)
    good = [
        Member(f"{label}/{n}.dcm", dicom_file(frame + 16 * n + 100 * i))
        for i, label in enumerate(("a", "b"))
        for n in range(3)
    ]
    broken = {
        "a/multi.dcm": (dicom_file(np.zeros((2, 4, 4), np.uint8), frames=2), "dicom_multi_frame"),
        "a/report.dcm": (dicom_file(frame, with_pixels=False), "no_pixel_data"),
        "b/cut.dcm": (dicom_file(frame.astype(np.uint16))[:-5], "truncated_image"),
        "b/video.dcm": (
            dicom_file(frame, transfer_syntax="1.2.840.10008.1.2.4.100"),
            "unsupported_transfer_syntax",
        ),
        "b/garbage.dcm": (b"not dicom at all" * 20, "not_decodable"),
    }
    members = good + [Member(path, data) for path, (data, _) in broken.items()]
    checked = validate(members)
    assert not checked.result.ok
    for path, (_, code) in broken.items():
        assert checked.error_for(path)["code"] == code, checked.errors
    assert len(checked.errors) == len(broken)


def test_dicom_without_an_extension_is_recognised_by_its_preamble() -> None:
    frame = np.arange(16, dtype=np.uint8).reshape(4, 4)
    members = [
        Member(f"{label}/IM{n:04d}", dicom_file(frame + 10 * n + 50 * i))
        for i, label in enumerate(("a", "b"))
        for n in range(3)
    ]
    members.append(Member("a/README", b"exported by PACS"))
    members.append(Member("a/BIGDUMP", bytes(LIMITS.max_file_bytes + 1)))  # not read: ignored
    checked = validate(members, split_seed=1)
    assert checked.result.ok, checked.errors
    assert len(checked.result.rows) == 6
    ignored = {w["entry"] for w in checked.warnings if w["code"] == "ignored_file"}
    assert ignored == {"a/README", "a/BIGDUMP"}


# --- PHI -----------------------------------------------------------------------------------------


def test_only_the_allow_list_and_a_salted_hash_leave_the_file() -> None:
    data = dicom_file(
        np.arange(16, dtype=np.uint8).reshape(4, 4),
        patient=PHI,
        modality="CR",
        extra={"InstitutionName": "St Elsewhere", "ReferringPhysicianName": "House^G"},
    )
    result = read_dicom(data, max_pixels=MAX_PIXELS, group_salt=GROUP_SALT)
    assert result.group == salted_group(PHI.patient_id, GROUP_SALT, "patient")
    assert result.group_source == "patient"
    assert result.group != salted_group(PHI.patient_id, "another deployment", "patient")
    assert result.header.modality == "CR"
    assert (result.header.rows, result.header.columns, result.header.bits_stored) == (4, 4, 8)
    kept = repr(result.header).encode() + result.image.data + (result.group or "").encode()
    for secret in (
        PHI.patient_id,
        PHI.name,
        "Doe",
        PHI.birth_date,
        PHI.study_uid,
        PHI.accession,
        "Elsewhere",
    ):
        assert secret.encode() not in kept, secret
    # The PNG holds pixels only: no text chunks.
    assert Image.open(io.BytesIO(result.image.data)).info == {}


def test_study_uid_groups_when_the_patient_id_is_empty() -> None:
    frame = np.zeros((4, 4), np.uint8)
    result = read_dicom(
        dicom_file(frame, patient=Patient(study_uid=PHI.study_uid)),
        max_pixels=MAX_PIXELS,
        group_salt=GROUP_SALT,
    )
    assert result.group_source == "study"
    assert result.group == salted_group(PHI.study_uid, GROUP_SALT, "study")


def test_multi_frame_files_split_into_frames_on_request_stay_in_one_split() -> None:
    rng = np.random.default_rng(4)
    cine = [rng.integers(0, 256, (3, 6, 6), dtype=np.uint8) for _ in range(8)]
    members = [
        Member(f"{'ab'[n % 2]}/cine{n}.dcm", dicom_file(frames, frames=3))
        for n, frames in enumerate(cine)
    ]
    refused = validate(members)
    assert {p["code"] for p in refused.errors} == {"dicom_multi_frame"}
    assert "dicom_frames=split" in refused.errors[0]["message"]
    split = validate(members, dicom_frames="split", split_seed=2)
    assert split.result.ok, split.errors
    rows = {row.path: row for row in split.result.rows}
    assert len(rows) == 24
    # Each frame is shown as stored (plain 8-bit), and the frames of a file share one split.
    first = read_dicom(members[0].data, max_pixels=MAX_PIXELS, group_salt="s", split_frames=True)
    assert [np.asarray(Image.open(io.BytesIO(f.data)))[..., 0].tolist() for f in first.frames] == [
        frame.tolist() for frame in cine[0]
    ]
    for n in range(8):
        frames = [rows[f"{'ab'[n % 2]}/cine{n}.dcm#frame={k:04d}"] for k in (1, 2, 3)]
        assert len({row.split for row in frames}) == 1
        assert len({row.group for row in frames}) == 1  # the file's (hashed) study
    # Without patient groups, the frames of a file are still one group.
    alone = validate(members, dicom_frames="split", split_seed=2, group_by="none")
    assert alone.result.ok, alone.errors
    assert alone.result.stats["split"]["group_by"] == "file"
    assert {row.group for row in alone.result.rows if row.path.startswith("a/cine0.dcm")} == {
        "file:a/cine0.dcm"
    }
    # A labels CSV naming the file labels all of its frames.
    labels = "image,label\n" + "".join(f"{m.name},{m.name[0]}\n" for m in members)
    listed = validate(
        [*members, Member("labels.csv", labels.encode())], dicom_frames="split", split_seed=2
    )
    assert listed.result.ok, listed.errors
    assert len(listed.result.rows) == 24
