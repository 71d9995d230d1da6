"""How any image file becomes the S × S RGB picture a student sees: one policy for training,
evaluation and serving. Torch-free, so the API's ONNX inference uses the very same code."""

from __future__ import annotations

from PIL import Image, ImageOps

# The file extensions that are images, for the service's ingest and the engine's folder scan.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
)
# Recorded in caches and exported configs; bump it whenever ``to_model_rgb`` changes.
RESIZE_POLICY = "plain-resize-bilinear-antialias-v1"


def to_model_rgb(image: Image.Image, image_size: int) -> Image.Image:
    """An opened image as ``S × S`` RGB: EXIF orientation applied, grayscale replicated, alpha
    dropped (palette transparency resolved to RGBA first so PIL does not guess), then a plain
    bilinear resize of the whole image (no crop: lesions near the border stay in view)."""
    oriented = ImageOps.exif_transpose(image)
    if oriented.mode == "P" and "transparency" in oriented.info:
        oriented = oriented.convert("RGBA")
    return oriented.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
