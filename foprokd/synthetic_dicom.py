"""DICOM files made from pixels, for the sample datasets and the tests of DICOM ingest.

``dicom_file`` writes one Part 10 file (preamble + ``DICM``) with the image modules a scanner
writes: photometric interpretation, bits, rescale, window, palette, multi-frame, and either
uncompressed little-endian pixels or JPEG Baseline (encoded by Pillow, encapsulated by pydicom).
Patient fields are filled on request, so tests can plant PHI and check that none of it leaks.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    SecondaryCaptureImageStorage,
    generate_uid,
)

Compression = Literal["none", "jpeg"]
# Fixed root so generated UIDs look like one site's; the suffix is random per file.
_UID_PREFIX = "1.2.826.0.1.3680043.10.1234."


@dataclass(frozen=True)
class Patient:
    """The patient module of a synthetic file (every field is PHI in a real one)."""

    patient_id: str = ""
    name: str = ""
    birth_date: str = ""  # YYYYMMDD
    study_uid: str = ""
    accession: str = ""


def dicom_file(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    rescale: tuple[float, float] | None = None,
    window: tuple[float, float] | None = None,
    palette: Sequence[np.ndarray] | None = None,
    frames: int = 1,
    compression: Compression = "none",
    transfer_syntax: str | None = None,
    patient: Patient | None = None,
    modality: str = "OT",
    with_pixels: bool = True,
    extra: Mapping[str, Any] | None = None,
    uid_seed: str | None = None,
) -> bytes:
    """One DICOM file holding ``pixels`` as stored values.

    ``pixels``: (H, W) or (H, W, 3), dtype uint8/uint16/int16 (signed gives PixelRepresentation
    1); with ``frames`` > 1, (F, H, W). ``bits_stored`` defaults to the dtype's bits.
    ``rescale``: (slope, intercept); ``window``: (centre, width); ``palette``: red, green and
    blue LUTs (uint16, 256 entries) for ``PALETTE COLOR``. ``compression="jpeg"`` stores 8-bit
    pixels as JPEG Baseline (``YBR_FULL_422`` for colour, as cameras and PACS write it).
    ``transfer_syntax`` overrides the UID written (to test refusals). ``with_pixels=False``
    leaves out Pixel Data (a report-like object); ``extra``: more attributes by keyword.
    ``uid_seed`` derives the UIDs from it (same seed, same bytes); random UIDs without it.
    """

    def new_uid(part: str) -> UID:
        sources = [uid_seed, part] if uid_seed is not None else None
        return generate_uid(prefix=_UID_PREFIX, entropy_srcs=sources)

    ds = Dataset()
    sop_uid = new_uid("sop")
    syntax = JPEGBaseline8Bit if compression == "jpeg" else ExplicitVRLittleEndian
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax) if transfer_syntax else syntax
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.Modality = modality
    person = patient or Patient()
    ds.PatientID = person.patient_id
    ds.PatientName = person.name
    ds.PatientBirthDate = person.birth_date
    ds.AccessionNumber = person.accession
    ds.StudyInstanceUID = person.study_uid or new_uid("study")
    ds.SeriesInstanceUID = new_uid("series")
    colour = pixels.ndim == (4 if frames > 1 else 3)
    shape = pixels.shape[1:] if frames > 1 else pixels.shape
    ds.Rows, ds.Columns = int(shape[0]), int(shape[1])
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    bits = 8 * pixels.dtype.itemsize
    ds.BitsAllocated = bits
    ds.BitsStored = bits_stored or bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if np.issubdtype(pixels.dtype, np.signedinteger) else 0
    ds.PhotometricInterpretation = photometric
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if palette is not None:
        for channel, lut in zip(("Red", "Green", "Blue"), palette, strict=True):
            setattr(ds, f"{channel}PaletteColorLookupTableDescriptor", [len(lut), 0, 16])
            setattr(ds, f"{channel}PaletteColorLookupTableData", np.asarray(lut, "<u2").tobytes())
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)
    if with_pixels:
        if compression == "jpeg":
            ds.PixelData = encapsulate([_jpeg(pixels)])
            ds["PixelData"].VR = "OB"
            if colour:
                ds.PhotometricInterpretation = "YBR_FULL_422"
        else:
            raw = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("<")).tobytes()
            # A compressed syntax named only to test refusals still needs encapsulated data.
            ds.PixelData = (
                encapsulate([raw]) if ds.file_meta.TransferSyntaxUID.is_compressed else raw
            )
            ds["PixelData"].VR = (
                "OW" if bits > 8 and not ds.file_meta.TransferSyntaxUID.is_compressed else "OB"
            )
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _jpeg(pixels: np.ndarray) -> bytes:
    if pixels.dtype != np.uint8:
        raise ValueError("JPEG Baseline stores 8-bit pixels")
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=95)
    return out.getvalue()


def radiograph(grey: np.ndarray, rng: np.random.Generator, style: int, patient: Patient) -> bytes:
    """``grey`` ((H, W) uint8) as one of three kinds of file PACS exports hold: ``style`` 0 is a
    12-bit CT-like MONOCHROME2 image with rescale and a window, 1 a MONOCHROME1 radiograph
    (inverted stored values), 2 a JPEG Baseline secondary capture."""
    uid_seed = str(int(rng.integers(2**62)))
    if style % 3 == 0:
        stored = (grey.astype(np.uint16) * 16 + rng.integers(0, 16, grey.shape)).astype(np.uint16)
        # Rescale -1024 and a window over the whole stored range: a viewer shows ``grey``.
        return dicom_file(
            stored,
            bits_stored=12,
            rescale=(1.0, -1024.0),
            window=(1024.0, 4096.0),
            patient=patient,
            modality="CT",
            uid_seed=uid_seed,
        )
    if style % 3 == 1:
        inverted = (255 - grey).astype(np.uint16) * 4
        return dicom_file(
            inverted,
            photometric="MONOCHROME1",
            bits_stored=10,
            patient=patient,
            modality="CR",
            uid_seed=uid_seed,
        )
    return dicom_file(grey, compression="jpeg", patient=patient, modality="XC", uid_seed=uid_seed)
