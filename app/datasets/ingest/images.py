"""One image file checked: it decodes completely, is not a decompression bomb, and is stored as
8-bit RGB (other modes are converted to PNG, with a note saying what changed)."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# PIL format -> (stored extension, content type) for files kept byte for byte.
_KEPT_FORMATS: dict[str, tuple[str, str]] = {
    "JPEG": ("jpg", "image/jpeg"),
    "MPO": ("jpg", "image/jpeg"),  # multi-picture JPEG from cameras; readers see the first image
    "PNG": ("png", "image/png"),
    "BMP": ("bmp", "image/bmp"),
    "TIFF": ("tif", "image/tiff"),
    "WEBP": ("webp", "image/webp"),
}
_HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
# EXIF orientations that swap width and height when applied.
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})


class ImageRejected(Exception):
    """The file is not a usable image; ``kind`` is ``not_decodable``, ``truncated_image``,
    ``unsupported_image_format`` or ``too_many_pixels``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class CheckedImage:
    """A decodable image ready to store.

    ``data``: the bytes to store (the original file, or a PNG when converted); ``width`` and
    ``height``: pixels as displayed (EXIF orientation applied); ``note``: what was converted or
    ignored, for a warning, or None.
    """

    data: bytes
    extension: str
    content_type: str
    width: int
    height: int
    note: str | None
    converted: bool


def check_image(data: bytes, *, max_pixels: int) -> CheckedImage:
    """Decode ``data`` completely and return what to store; raises ``ImageRejected``.

    The pixel count is checked from the header before any pixel is decoded, so a small file
    declaring a huge canvas costs nothing.
    """
    with warnings.catch_warnings():
        # PIL warns above its own default limit; ours is checked just below.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise ImageRejected("too_many_pixels", f"{exc} (limit {max_pixels} pixels)") from exc
        except UnidentifiedImageError as exc:
            raise ImageRejected(
                "not_decodable", "the content is not an image in any known format (or is corrupt)"
            ) from exc
        except Exception as exc:  # PIL raises many types for garbage input
            raise ImageRejected(
                "not_decodable", f"not a readable image ({type(exc).__name__}: {exc})"
            ) from exc
        with image:
            return _check_opened(image, data, max_pixels)


def _check_opened(image: Image.Image, data: bytes, max_pixels: int) -> CheckedImage:
    fmt = image.format or "unknown"
    if fmt not in _KEPT_FORMATS:
        raise ImageRejected(
            "unsupported_image_format",
            f"{fmt} images are not supported; use JPEG, PNG, BMP, TIFF or WebP",
        )
    width, height = image.size
    if width * height > max_pixels:
        raise ImageRejected(
            "too_many_pixels",
            f"{width}x{height} = {width * height} pixels is over the limit of {max_pixels}; "
            "downscale the image",
        )
    try:
        image.load()
    except Exception as exc:  # truncated or corrupt pixel data surfaces as OSError/ValueError/...
        kind = "truncated_image" if "truncated" in str(exc) else "not_decodable"
        raise ImageRejected(kind, f"the image data is broken ({exc})") from exc
    notes = []
    frames = getattr(image, "n_frames", 1)
    if frames > 1 and fmt != "MPO":
        notes.append(f"it has {frames} frames; only the first is used")
    orientation = image.getexif().get(0x0112, 1)
    if orientation in _TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    if image.mode == "RGB":
        extension, content_type = _KEPT_FORMATS[fmt]
        return CheckedImage(
            data, extension, content_type, width, height, "; ".join(notes) or None, False
        )
    source_mode = image.mode
    rgb = _to_rgb(ImageOps.exif_transpose(image))
    notes.insert(0, _conversion_note(source_mode))
    out = io.BytesIO()
    rgb.save(out, format="PNG", compress_level=6)
    return CheckedImage(
        out.getvalue(), "png", "image/png", rgb.width, rgb.height, "; ".join(notes), True
    )


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in _HIGH_DEPTH_MODES:
        pixels = np.asarray(image)
        low, high = float(pixels.min()), float(pixels.max())
        scale = 255.0 / (high - low) if high > low else 0.0
        eight_bit = ((pixels.astype(np.float32) - low) * scale).round().astype(np.uint8)
        return Image.fromarray(eight_bit).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # resolve palette transparency before dropping alpha
    return image.convert("RGB")


def _conversion_note(mode: str) -> str:
    if mode in _HIGH_DEPTH_MODES:
        return (
            f"converted from {mode} (more than 8 bits per pixel) to 8-bit RGB, stretching this "
            "image's own min..max to 0..255"
        )
    if mode == "CMYK":
        return "converted from CMYK to RGB"
    if mode in ("L", "1", "LA"):
        return f"converted from grayscale ({mode}) to RGB by repeating the channel"
    if mode in ("RGBA", "PA", "P"):
        return f"converted from {mode} to RGB (any transparency was dropped)"
    return f"converted from {mode} to RGB"
