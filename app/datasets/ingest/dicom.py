"""DICOM entries as images: pixels converted the way a radiologist's viewer shows them, and nothing
else of the file kept but an allow-list of header fields.

Conversion (pydicom's own functions, in the order of the DICOM grayscale pipeline): the modality
LUT (rescale slope/intercept, or a Modality LUT Sequence), then the VOI LUT or window
centre/width when the file has one, then 8-bit scaling (over the VOI output range; without a
window, plain 8-bit pixels are shown as stored and deeper ones stretched over the image's own
min..max); MONOCHROME1 is inverted so that its lowest value is white; YBR is converted to RGB;
palette colour is looked up. Multi-frame files are refused, or split into one image per frame
on request.

PHI: patient names, birth dates, IDs and every other header value stay inside this module.
What leaves is ``DicomHeader`` (modality, photometric interpretation, rows/columns, bits,
transfer syntax) and, only to group images of one patient, a salted hash of PatientID (or of
StudyInstanceUID when PatientID is empty). Error messages are this module's own words.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi_lut,
    convert_color_space,
    get_decoder,
    pixel_array,
)
from pydicom.uid import UID, ImplicitVRLittleEndian

from app.datasets.ingest.images import CheckedImage, ImageRejected

DICOM_EXTENSIONS = frozenset({".dcm", ".dicom"})
# Part 10 files: a 128-byte preamble, then this magic.
_MAGIC_OFFSET = 128
_MAGIC = b"DICM"
_MONOCHROME = frozenset({"MONOCHROME1", "MONOCHROME2"})
_YBR = frozenset({"YBR_FULL", "YBR_FULL_422"})
# Far outside any stored value: the VOI transform maps them to the ends of its output range.
_VOI_PROBE = np.array([-(2.0**40), 2.0**40])

# pydicom's warnings and log lines can quote header values (a malformed PatientBirthDate, say),
# and logs are kept: its logger is silenced so that no PHI reaches them.
logging.getLogger("pydicom").propagate = False
logging.getLogger("pydicom").setLevel(logging.CRITICAL + 1)

GroupSource = Literal["patient", "study"]


@dataclass(frozen=True)
class DicomHeader:
    """The header fields that may leave the archive (the allow-list)."""

    modality: str | None
    photometric_interpretation: str
    rows: int
    columns: int
    bits_allocated: int
    bits_stored: int
    transfer_syntax: str  # its name, e.g. "JPEG Baseline (Process 1)"
    frames: int = 1


@dataclass(frozen=True)
class DicomImage:
    """A converted DICOM file: the PNG to store per frame (one for a single-frame file), the
    allow-listed header, and ``group``, the salted hash of the patient (or study) the image
    belongs to, or None when the file names neither; ``group_source`` says which."""

    frames: tuple[CheckedImage, ...]
    header: DicomHeader
    group: str | None
    group_source: GroupSource | None

    @property
    def image(self) -> CheckedImage:
        """The image of a single-frame file (the first frame otherwise)."""
        return self.frames[0]


def has_dicom_magic(data: bytes) -> bool:
    """True when ``data`` starts like a DICOM Part 10 file (preamble + ``DICM``)."""
    return data[_MAGIC_OFFSET : _MAGIC_OFFSET + 4] == _MAGIC


def salted_group(value: str, salt: str, kind: str = "patient") -> str:
    """``g-`` + 16 hex digits of HMAC-SHA256 over ``kind:value`` keyed by ``salt``: stable within
    one deployment, not reversible to the ID without the salt (IDs are guessable, the salt not)."""
    digest = hmac.new(salt.encode(), f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()
    return f"g-{digest[:16]}"


def read_dicom(
    data: bytes, *, max_pixels: int, group_salt: str, split_frames: bool = False
) -> DicomImage:
    """Decode the DICOM file ``data`` into 8-bit RGB PNGs (one per frame when ``split_frames``,
    else a multi-frame file is refused); raises ``ImageRejected`` with a reason
    (``no_pixel_data``, ``dicom_multi_frame``, ``unsupported_transfer_syntax``,
    ``burned_in_annotation``, ``truncated_image``, ``too_many_pixels``, ``not_decodable``).
    ``max_pixels`` bounds all frames of a file together (they are decoded at once)."""
    with warnings.catch_warnings():
        # pydicom warns about odd values by quoting them; those values may be PHI.
        warnings.simplefilter("ignore")
        ds = _parse(data)
        header = _check_header(ds, max_pixels, split_frames)
        frames = _decode(ds, header)
        group, source = _group_of(ds, group_salt)
    return DicomImage(tuple(_png(rgb) for rgb in frames), header, group, source)


def _png(rgb: np.ndarray) -> CheckedImage:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="PNG", compress_level=6)
    height, width = rgb.shape[:2]
    return CheckedImage(out.getvalue(), "png", "image/png", width, height, None, True)


def _parse(data: bytes) -> Dataset:
    try:
        # Files without the preamble (raw datasets some PACS exports write) need ``force``.
        ds = dcmread(io.BytesIO(data), force=not has_dicom_magic(data))
        if "SOPClassUID" not in ds and "PixelData" not in ds:
            raise InvalidDicomError("neither a SOP Class nor pixel data")
        return ds
    except InvalidDicomError as exc:
        raise ImageRejected("not_decodable", "not a DICOM file (no readable header)") from exc
    except (EOFError, OSError) as exc:
        raise ImageRejected("truncated_image", "the DICOM file ends inside its header") from exc
    except Exception as exc:  # pydicom raises many types for garbage headers
        raise ImageRejected(
            "not_decodable", f"the DICOM header cannot be read ({type(exc).__name__})"
        ) from exc


def _check_header(ds: Dataset, max_pixels: int, split_frames: bool) -> DicomHeader:
    if "PixelData" not in ds:
        kinds = [name for name in ("FloatPixelData", "DoubleFloatPixelData") if name in ds]
        what = f"only {kinds[0]} (parametric maps are not images)" if kinds else "no pixel data"
        raise ImageRejected(
            "no_pixel_data",
            f"the DICOM file has {what} (a report, a structured or presentation object?); "
            "export the images themselves",
        )
    meta = getattr(ds, "file_meta", None)
    syntax = UID(str(meta.get("TransferSyntaxUID", ImplicitVRLittleEndian)) if meta else "")
    syntax = syntax or ImplicitVRLittleEndian
    _check_syntax(syntax)
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        bits_allocated, bits_stored = int(ds.BitsAllocated), int(ds.get("BitsStored", 0) or 0)
        photometric = str(ds.PhotometricInterpretation).strip().upper()
    except (AttributeError, TypeError, ValueError) as exc:
        raise ImageRejected(
            "not_decodable",
            "the DICOM image module is incomplete (Rows, Columns, BitsAllocated, "
            "PhotometricInterpretation are required)",
        ) from exc
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1 and not split_frames:
        raise ImageRejected(
            "dicom_multi_frame",
            f"a multi-frame DICOM file ({frames} frames: a cine loop, a volume or a tomosynthesis "
            "stack); export the frames as single-frame files, or upload with "
            "dicom_frames=split to make each frame an image",
        )
    if rows * columns * frames > max_pixels:
        raise ImageRejected(
            "too_many_pixels",
            f"{frames} frame(s) of {columns}x{rows} = {rows * columns * frames} pixels is over "
            f"the limit of {max_pixels}",
        )
    if str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES":
        raise ImageRejected(
            "burned_in_annotation",
            "the header says patient details are burned into the pixels (BurnedInAnnotation "
            "YES); remove them and re-export",
        )
    modality = str(ds.get("Modality", "") or "").strip().upper() or None
    return DicomHeader(
        modality,
        photometric,
        rows,
        columns,
        bits_allocated,
        bits_stored or bits_allocated,
        syntax.name,
        frames,
    )


def _check_syntax(syntax: UID) -> None:
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as exc:
        raise ImageRejected(
            "unsupported_transfer_syntax",
            f"transfer syntax {_syntax_name(syntax)} is not supported (no decoder for it); "
            "export uncompressed, RLE or JPEG",
        ) from exc
    if not decoder.is_available:
        raise ImageRejected(
            "unsupported_transfer_syntax",
            f"transfer syntax {_syntax_name(syntax)} needs a decoder this server lacks "
            f"({'; '.join(decoder.missing_dependencies) or 'none installed'})",
        )


def _syntax_name(syntax: UID) -> str:
    return f"{syntax.name} ({syntax})" if syntax.name != str(syntax) else str(syntax)


def _decode(ds: Dataset, header: DicomHeader) -> list[np.ndarray]:
    try:
        raw = pixel_array(ds, raw=True)
    except ValueError as exc:
        if "less than expected" in str(exc) or "truncated" in str(exc).lower():
            raise ImageRejected(
                "truncated_image", "the DICOM pixel data is shorter than its header declares"
            ) from exc
        raise ImageRejected("not_decodable", f"the DICOM pixel data is broken ({exc})") from exc
    except Exception as exc:  # decoder plugins raise their own types for corrupt streams
        raise ImageRejected(
            "not_decodable", f"the DICOM pixel data cannot be decoded ({type(exc).__name__})"
        ) from exc
    stack = raw if header.frames > 1 else raw[None]
    try:
        return [viewer_rgb(frame, ds, header.photometric_interpretation) for frame in stack]
    except ValueError as exc:
        raise ImageRejected(
            "not_decodable", f"the DICOM pixels cannot be displayed ({exc})"
        ) from exc


def viewer_rgb(raw: np.ndarray, ds: Dataset, photometric: str) -> np.ndarray:
    """Stored pixel values ``raw`` ((H, W) or (H, W, 3), as decoded) to (H, W, 3) uint8 RGB as a
    viewer displays them (see the module docstring for the steps)."""
    if photometric in _MONOCHROME:
        grey = _grey_to_8bit(raw, ds)
        if photometric == "MONOCHROME1":
            grey = 255 - grey  # MONOCHROME1: the lowest value is white
        return np.repeat(grey[..., None], 3, axis=2)
    if photometric == "PALETTE COLOR":
        colours = apply_color_lut(raw, ds)
        if colours.dtype != np.uint8:
            colours = np.rint(colours.astype(np.float64) / 257.0).astype(np.uint8)
        return np.ascontiguousarray(colours[..., :3])
    if photometric in _YBR:
        raw = convert_color_space(raw, photometric, "RGB")
    elif photometric != "RGB":
        raise ValueError(f"photometric interpretation {photometric!r} is not supported")
    if raw.ndim != 3 or raw.shape[2] != 3:
        raise ValueError(f"{photometric} needs 3 samples per pixel")
    if raw.dtype == np.uint8:
        return np.ascontiguousarray(raw)
    top = 2 ** int(ds.get("BitsStored", 8 * raw.dtype.itemsize)) - 1
    return np.rint(np.clip(raw, 0, top) * (255.0 / top)).astype(np.uint8)


def _grey_to_8bit(raw: np.ndarray, ds: Dataset) -> np.ndarray:
    values = apply_modality_lut(raw, ds)
    sequence: Any = ds.get("VOILUTSequence")
    if sequence:
        # A VOI LUT's output spans 0 .. 2**bits - 1 (the third LUT Descriptor value).
        low, high = 0.0, float(2 ** int(sequence[0].LUTDescriptor[2]) - 1)
        values = apply_voi_lut(np.rint(values).astype(np.int64), ds)
    elif ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        low, high = (float(v) for v in apply_voi_lut(_VOI_PROBE.copy(), ds))
        values = apply_voi_lut(values.astype(np.float64), ds)
    elif _plain_8_bit(ds):
        low, high = 0.0, 255.0  # already display values (secondary captures, JPEG exports)
    else:
        # No window in the file: stretch this image's own range, as viewers do by default.
        low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    scaled = (np.clip(values.astype(np.float64), low, high) - low) * (255.0 / (high - low))
    return np.rint(scaled).astype(np.uint8)


def _plain_8_bit(ds: Dataset) -> bool:
    rescaled = "ModalityLUTSequence" in ds or float(ds.get("RescaleSlope", 1) or 1) != 1.0
    shifted = float(ds.get("RescaleIntercept", 0) or 0) != 0.0
    unsigned = int(ds.get("PixelRepresentation", 0) or 0) == 0
    return int(ds.BitsStored) <= 8 and unsigned and not rescaled and not shifted


def _group_of(ds: Dataset, salt: str) -> tuple[str | None, GroupSource | None]:
    patient = str(ds.get("PatientID", "") or "").strip()
    if patient:
        return salted_group(patient, salt, "patient"), "patient"
    study = str(ds.get("StudyInstanceUID", "") or "").strip()
    if study:
        return salted_group(study, salt, "study"), "study"
    return None, None
