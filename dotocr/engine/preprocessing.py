"""Turn whatever a person hands us into the exact pixels and patches dots.ocr expects.

Loading (`load_image`): any Pillow-readable file, bytes or image becomes an RGB image with its EXIF
orientation applied. Transparent pixels become white (the model was trained on white pages), 16-bit
and float images are scaled into 0..255 rather than clipped. Every failure is an `ImageError` whose
message is one sentence naming the input, the problem and the fix. Images above MAX_INPUT_PIXELS
are refused before decoding, whatever the global Pillow limit is set to.

Sizing (`ImagePreparer.prepare`), in this order, with one uniform scale so boxes map back exactly:

1. Tiny crops are enlarged. A crop whose short side is under TINY_SHORT_SIDE (56 px, two rows of
   vision tokens) is usually one or two lines of screen text with 10-14 px glyphs; the model reads
   documents rendered at about 200 dpi, where glyphs are 25-40 px, so such a crop is scaled until
   its short side reaches 56 px, by at most MAX_TEXT_UPSCALE (4x). A single 12 px line (180 x 14)
   becomes 720 x 56. Independently, anything smaller than the processor's `min_pixels` is scaled up
   until its area reaches it, so each side can hold at least one 28 px token.
2. The longest side is brought down to `max_image_size` (rounded down to a multiple of 28), and the
   area to the processor's `max_pixels`. Shrinking wins over enlarging.
3. The content is resized once (bicubic, as the processor would) and placed at the top left of a
   white canvas whose sides are the content's sides rounded up to multiples of 28 (the vision
   patch 14 times the 2x2 merge), never beyond the limit of step 2. The padding is white, right
   and bottom only, less than 28 px per side.
4. The canvas grows with more white padding where the model's own rules need it: area at least
   `min_pixels` (when the size limit allows) and aspect ratio at most 200:1, which Qwen2-VL's
   `smart_resize` would otherwise refuse (a 3000 x 14 strip is padded, not rejected).

The canvas is handed to `Qwen2VLImageProcessorPil` with resizing switched off, so the processor only
normalises and cuts patches (in 2x2 merge-window order); we check its grid matches the canvas.
"""

from __future__ import annotations

import io
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from dotocr.errors import DotOCRError, ImageError, ModelUnavailableError

ImageInput = Image.Image | str | os.PathLike | bytes

MAX_INPUT_PIXELS = 8192 * 8192
"""About 67 megapixels: more than an 8K screen or an A4 page scanned at 600 dpi."""
TINY_SHORT_SIDE = 56
MAX_TEXT_UPSCALE = 4.0
MAX_ASPECT_RATIO = 200

# The official dots.ocr preprocessor_config.json, used when no checkpoint folder is given.
DOTS_PREPROCESSOR_CONFIG: dict[str, Any] = {
    "min_pixels": 3136,
    "max_pixels": 11289600,
    "patch_size": 14,
    "temporal_patch_size": 1,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
}
_PROCESSOR_KEYS = (
    "min_pixels", "max_pixels", "patch_size", "temporal_patch_size", "merge_size", "image_mean",
    "image_std", "do_rescale", "rescale_factor", "do_normalize", "do_convert_rgb",
)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError,
                  MemoryError, AttributeError)


# --------------------------------------------------------------------------------------------------
# loading


def load_image(source: ImageInput) -> Image.Image:
    """Decode `source` fully into a fresh RGB image, or raise `ImageError` with a one-sentence reason."""
    name = _describe(source)
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its two limits; we want a clear refusal instead. (The filter
            # is process-wide while it lasts; a race only loses the warning, our own size check stays.)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if isinstance(source, Image.Image):
                return _normalise(source, name)
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
                return _normalise(image, name)
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


def _box_text(box: tuple[float, float, float, float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in box) + ")"


def declared_png_size(head: bytes) -> tuple[int, int] | None:
    """The width and height a PNG header claims, so a 0 x 0 PNG gets its own message."""
    if len(head) < 24 or not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _normalise(image: Image.Image, name: str) -> Image.Image:
    """Size checks, full decode, orientation and RGB conversion; always returns a new image."""
    width, height = image.size
    if width == 0 or height == 0:
        raise ImageError(f"{name} is {width} x {height} pixels and has nothing to read; "
                         f"capture or save a non-empty image.")
    if width * height > MAX_INPUT_PIXELS:
        raise ImageError(_too_large_message(name, (width, height)))
    image.load()  # forces a full decode: truncated files fail here, not later in the model
    try:
        oriented = ImageOps.exif_transpose(image)
    except _DECODE_ERRORS:
        oriented = image  # a damaged EXIF block should not stop the OCR; keep the stored orientation
    rgb = _to_rgb(oriented if oriented is not None else image, name)
    return rgb.copy() if rgb is image else rgb


def _to_rgb(image: Image.Image, name: str) -> Image.Image:
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_deep_to_uint8(image), mode="L").convert("RGB")
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info
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


def _deep_to_uint8(image: Image.Image) -> np.ndarray:
    """Scale 16-bit, 32-bit and float greyscale into 0..255 instead of letting Pillow clip to white."""
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
    else:
        scaled = (values - low) * (255.0 / (high - low))
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# sizing and patches


@dataclass
class PreparedImage:
    image: Image.Image
    """What the model sees: RGB, both sides multiples of 28."""
    original_size: tuple[int, int]
    scale: float
    """Model pixels per original pixel (the same on both axes)."""
    pad: tuple[int, int]
    """(right, bottom) white padding added, in model pixels."""
    pixel_values: torch.Tensor
    grid_thw: torch.Tensor
    image_tokens: int

    @property
    def content_size(self) -> tuple[int, int]:
        """The part of `image` that shows the input, before the padding."""
        return self.image.width - self.pad[0], self.image.height - self.pad[1]

    def to_original(self, x: float, y: float) -> tuple[float, float]:
        """A point in model pixels as a point in input pixels, clamped to the input image."""
        width, height = self.original_size
        return _clamp(x / self.scale, 0.0, width), _clamp(y / self.scale, 0.0, height)

    def box_to_model(self, box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
        """A box (x1, y1, x2, y2) in input pixels as a box in model pixels; one that shows nothing is refused."""
        x1, y1, x2, y2 = box
        width, height = self.original_size
        if not (x1 < x2 and y1 < y2):
            raise DotOCRError(f"The box {_box_text(box)} is empty: x2 must exceed x1 and y2 exceed y1.")
        if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
            raise DotOCRError(f"The box {_box_text(box)} lies outside the {width} x {height} image; "
                              "give a box in the image's pixels.")
        (mx1, my1), (mx2, my2) = self.to_model(x1, y1), self.to_model(x2, y2)
        return round(mx1), round(my1), round(mx2), round(my2)

    def to_model(self, x: float, y: float) -> tuple[float, float]:
        """A point in input pixels as a point in model pixels, clamped to the shown content."""
        width, height = self.content_size
        return _clamp(x * self.scale, 0.0, width), _clamp(y * self.scale, 0.0, height)


@dataclass(frozen=True)
class SizePlan:
    """Where an input of a given size ends up; pure arithmetic, so it can be checked for any size."""

    canvas: tuple[int, int]
    content: tuple[int, int]
    scale: float

    @property
    def pad(self) -> tuple[int, int]:
        return self.canvas[0] - self.content[0], self.canvas[1] - self.content[1]


class ImagePreparer:
    """Sizes images for dots.ocr and runs the checkpoint's own image processor on them."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        from transformers import Qwen2VLImageProcessorPil

        merged = {**DOTS_PREPROCESSOR_CONFIG, **(config or {})}
        self.processor = Qwen2VLImageProcessorPil(**{k: merged[k] for k in _PROCESSOR_KEYS if k in merged})
        self.patch_size = int(merged["patch_size"])
        self.merge_size = int(merged["merge_size"])
        self.min_pixels = int(merged["min_pixels"])
        self.max_pixels = int(merged["max_pixels"])
        self.factor = self.patch_size * self.merge_size

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> ImagePreparer:
        """Build from a checkpoint folder's preprocessor_config.json (no network, no remote code)."""
        path = Path(folder) / "preprocessor_config.json"
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ModelUnavailableError(
                f"{folder} has no preprocessor_config.json; "
                f"point the model setting at a complete dots.ocr folder."
            ) from exc
        except (OSError, ValueError) as exc:
            raise ModelUnavailableError(
                f"{path} could not be read as JSON; download the model again."
            ) from exc
        if not isinstance(config, dict):
            raise ModelUnavailableError(f"{path} does not hold a JSON object; download the model again.")
        return cls(config)

    def plan(self, width: int, height: int, max_image_size: int) -> SizePlan:
        """Apply the sizing rules of the module docstring to a `width` x `height` input."""
        if width < 1 or height < 1:
            raise ValueError(f"image size must be positive, got {width} x {height}")
        f = self.factor
        limit = max(f, max_image_size // f * f)
        area = width * height

        scale = 1.0
        short, long = min(width, height), max(width, height)
        if short < TINY_SHORT_SIDE:
            scale = min(MAX_TEXT_UPSCALE, TINY_SHORT_SIDE / short)
        scale = max(scale, math.sqrt(self.min_pixels / area))
        scale = min(scale, limit / long, math.sqrt(self.max_pixels / area))

        content_w = max(1, round(width * scale))
        content_h = max(1, round(height * scale))
        canvas_w = min(limit, max(f, math.ceil(content_w / f) * f))
        canvas_h = min(limit, max(f, math.ceil(content_h / f) * f))
        while canvas_w * canvas_h > self.max_pixels:  # ceil pushed the area over; shrink the longer side
            if canvas_w >= canvas_h:
                canvas_w -= f
            else:
                canvas_h -= f
        if content_w > canvas_w or content_h > canvas_h:  # the canvas cap cut into the content
            scale = min(canvas_w / width, canvas_h / height)
            content_w = min(canvas_w, max(1, round(width * scale)))
            content_h = min(canvas_h, max(1, round(height * scale)))

        while canvas_w * canvas_h < self.min_pixels:
            if canvas_w <= canvas_h and canvas_w + f <= limit:
                canvas_w += f
            elif canvas_h + f <= limit:
                canvas_h += f
            elif canvas_w + f <= limit:
                canvas_w += f
            else:
                break  # max_image_size is below the model's minimum: the user's limit wins
        if max(canvas_w, canvas_h) > MAX_ASPECT_RATIO * min(canvas_w, canvas_h):
            needed = math.ceil(max(canvas_w, canvas_h) / MAX_ASPECT_RATIO / f) * f
            if canvas_w < canvas_h:
                canvas_w = needed
            else:
                canvas_h = needed
        return SizePlan(canvas=(canvas_w, canvas_h), content=(content_w, content_h), scale=scale)

    def prepare(self, image: Image.Image, max_image_size: int) -> PreparedImage:
        """Resize and pad `image` (RGB, from `load_image`) and compute its patches and token count."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        plan = self.plan(image.width, image.height, max_image_size)
        content = image
        if plan.content != image.size:
            content = image.resize(plan.content, Image.Resampling.BICUBIC)
        if plan.canvas == plan.content:
            canvas = content if content is not image else image.copy()
        else:
            canvas = Image.new("RGB", plan.canvas, (255, 255, 255))
            canvas.paste(content, (0, 0))

        features = self.processor(images=canvas, do_resize=False, return_tensors="pt")
        pixel_values = features["pixel_values"].to(torch.float32)
        grid_thw = features["image_grid_thw"].to(torch.long)
        t, grid_h, grid_w = (int(v) for v in grid_thw[0])
        if (grid_w * self.patch_size, grid_h * self.patch_size) != canvas.size:
            raise RuntimeError(f"image processor resized {canvas.size} to a {grid_w} x {grid_h} patch grid")
        return PreparedImage(
            image=canvas,
            original_size=image.size,
            scale=plan.scale,
            pad=plan.pad,
            pixel_values=pixel_values,
            grid_thw=grid_thw,
            image_tokens=t * grid_h * grid_w // (self.merge_size**2),
        )


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)
