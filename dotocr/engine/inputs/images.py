"""Any image a person hands us, decoded into a fresh RGB image, or one sentence saying why not.

Any Pillow-readable file, bytes or image becomes an RGB image with its EXIF orientation applied. A PIL image
that already is plain upright RGB is returned as it is (nothing downstream changes an input image), so a front
end that checked a file here hands the engine that image, and the engine does not decode or copy it again.
Transparent pixels become white (the model was trained on white pages), 16-bit and float images are
scaled into 0..255 rather than clipped. Every failure is an `ImageError` whose message is one sentence
naming the input, the problem and the fix. Images above MAX_INPUT_PIXELS are refused before decoding,
whatever the global Pillow limit is set to.

Light on purpose (Pillow and NumPy only): front ends check a file here before any model loads.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from dotocr.errors import ImageError

ImageInput = Image.Image | str | os.PathLike | bytes

MAX_INPUT_PIXELS = 8192 * 8192
"""About 67 megapixels: more than an 8K screen or an A4 page scanned at 600 dpi."""
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError,
                  MemoryError, AttributeError, ArithmeticError, RuntimeError, struct.error)
"""What Pillow's decoders raise on damaged files (a plugin's arithmetic or unpacking gone wrong included)."""
_EXIF_ORIENTATION = 0x0112


def load_image(source: ImageInput) -> Image.Image:
    """Decode `source` fully into an RGB image, or raise `ImageError` with a one-sentence reason."""
    name = _describe(source)
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its two limits; we want a clear refusal instead. (The filter
            # is process-wide while it lasts; a race only loses the warning, our own size check stays.)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if isinstance(source, Image.Image):
                return _normalise(source, name, fresh=False)
            if isinstance(source, (bytes, bytearray, memoryview)):
                if len(source) == 0:
                    raise ImageError(f"{name} is empty (0 bytes); copy or save the image again and retry.")
                fp: Any = io.BytesIO(bytes(source))
            else:
                fp = os.fspath(source)
                if os.path.isdir(fp):
                    raise ImageError(f"{name} is a folder, not an image file; pass the path of one image.")
                if os.path.isfile(fp) and os.path.getsize(fp) == 0:
                    raise ImageError(f"{name} is empty (0 bytes); save the image again and retry.")
            with Image.open(fp) as image:
                return _normalise(image, name, fresh=True)
    except ImageError:
        raise
    except FileNotFoundError as exc:
        raise ImageError(f"{name} does not exist; check the path and try again.") from exc
    except PermissionError as exc:
        raise ImageError(f"{name} cannot be read (permission denied); check its permissions.") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(_too_large_message(name, None)) from exc
    except UnidentifiedImageError as exc:
        raise ImageError(_unidentified_message(source, name)) from exc
    except _DECODE_ERRORS as exc:
        raise ImageError(
            f"{name} is truncated or corrupt and could not be decoded; "
            f"save or copy the image again and retry."
        ) from exc


def _describe(source: object) -> str:
    if isinstance(source, Image.Image):
        return "The image"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "The image data"
    try:
        return f'"{os.fspath(source)}"'  # type: ignore[arg-type]
    except TypeError:
        raise ImageError(
            f"An image must be a file path, bytes or a PIL image, not {type(source).__name__}; "
            f"pass one of those."
        ) from None


def _too_large_message(name: str, size: tuple[int, int] | None) -> str:
    limit = f"the {MAX_INPUT_PIXELS // 1_000_000}-megapixel limit"
    if size is None:
        return f"{name} claims to be larger than {limit}; crop or scale it down and try again."
    return (f"{name} is {size[0]} x {size[1]} pixels, larger than {limit}; "
            f"crop or scale it down and try again.")


def _unidentified_message(source: object, name: str) -> str:
    head = b""
    if isinstance(source, (bytes, bytearray, memoryview)):
        head = bytes(source[:32])
    else:
        try:
            with open(os.fspath(source), "rb") as file:  # type: ignore[arg-type]
                head = file.read(32)
        except OSError:
            pass
    size = declared_png_size(head)
    if size is not None and 0 in size:
        return (f"{name} is {size[0]} x {size[1]} pixels and has nothing to read; "
                f"capture or save a non-empty image.")
    return (f"{name} is not an image file that can be read (unknown format or a damaged header); "
            f"save it as PNG or JPEG and try again.")


def declared_png_size(head: bytes) -> tuple[int, int] | None:
    """The width and height a PNG header claims, so a 0 x 0 PNG gets its own message."""
    if len(head) < 24 or not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _normalise(image: Image.Image, name: str, *, fresh: bool) -> Image.Image:
    """Size checks, full decode, orientation and RGB conversion. `fresh`: the result must not be `image` itself
    (an image opened from a file is closed afterwards, which would leave it unusable)."""
    width, height = image.size
    if width == 0 or height == 0:
        raise ImageError(f"{name} is {width} x {height} pixels and has nothing to read; "
                         f"capture or save a non-empty image.")
    if width * height > MAX_INPUT_PIXELS:
        raise ImageError(_too_large_message(name, (width, height)))
    image.load()  # forces a full decode: truncated files fail here, not later in the model
    rgb = _to_rgb(_upright(image), name)
    return rgb.copy() if fresh and rgb is image else rgb


def _upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says; the image itself when there is nothing to turn."""
    try:
        if image.getexif().get(_EXIF_ORIENTATION, 1) == 1:
            return image
        return ImageOps.exif_transpose(image) or image
    except _DECODE_ERRORS:
        return image  # a damaged EXIF block should not stop the OCR; keep the stored orientation


def _to_rgb(image: Image.Image, name: str) -> Image.Image:
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_deep_to_uint8(image), mode="L").convert("RGB")
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info
    if mode == "RGB" and not has_alpha:
        return image
    try:
        if has_alpha:
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return image.convert("RGB")
    except ValueError as exc:
        raise ImageError(
            f"{name} uses the {mode} colour mode, which cannot be converted to RGB; save it as PNG or JPEG."
        ) from exc


def _deep_to_uint8(image: Image.Image) -> Any:
    """Scale 16-bit, 32-bit and float greyscale into 0..255 instead of letting Pillow clip to white."""
    import numpy as np

    data = np.asarray(image)
    if image.mode.startswith("I;16"):
        return ((data.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    values = np.nan_to_num(data.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    if image.mode == "F" and low >= 0.0 and high <= 1.0:
        scaled = values * 255.0
    elif low >= 0.0 and high <= 255.0:
        scaled = values
    elif low >= 0.0 and high <= 65535.0:
        scaled = values / 257.0
    elif high > low:
        scaled = (values - low) * (255.0 / (high - low))
    else:  # one value everywhere, outside 0..65535: a flat image, shown as mid grey
        scaled = np.full_like(values, 128.0)
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)
