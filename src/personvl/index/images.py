"""Opening images without trusting them: size and pixel limits are checked before decoding."""

from __future__ import annotations

import io
import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from personvl.errors import PersonvlError

# Formats a person crop or a camera frame comes in; anything else (PDF, TIFF, EPS...) brings
# decoders with a larger attack surface and no use here.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
DEFAULT_MAX_PIXELS = 40_000_000


class ImageRejected(PersonvlError):
    """An image that cannot or must not be decoded; ``reason`` says which limit it broke."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason  # "not_an_image", "format", "too_many_pixels", "corrupt"


def open_image(source: str | os.PathLike | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``source`` (a path or the bytes of a file) to an RGB image.

    The header is parsed first and the pixel count checked before any pixel is decoded, so a
    small file that expands to gigabytes (a decompression bomb) is refused cheaply.
    """
    name = "upload" if isinstance(source, (bytes, bytearray)) else str(source)
    stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else Path(source).open("rb")
    with stream:
        try:
            image = Image.open(stream, formats=ACCEPTED_FORMATS)
        except UnidentifiedImageError:
            raise ImageRejected(f"{name}: not an image in a supported format "
                                f"({', '.join(ACCEPTED_FORMATS)})", "not_an_image") from None
        except Image.DecompressionBombError as exc:
            raise ImageRejected(f"{name}: {exc}", "too_many_pixels") from None
        except (OSError, SyntaxError, ValueError) as exc:  # a recognised header cut short or malformed
            raise ImageRejected(f"{name}: cannot decode the image ({exc})", "corrupt") from None
        width, height = image.size
        if width * height > max_pixels:
            raise ImageRejected(f"{name}: {width}x{height} pixels is more than the limit of "
                                f"{max_pixels:,}", "too_many_pixels")
        try:
            image.load()
            return image.convert("RGB")
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise ImageRejected(f"{name}: cannot decode the image ({exc})", "corrupt") from None
