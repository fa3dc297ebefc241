"""Turn a decoded RGB image (see `images.py`) into the exact pixels and patches dots.ocr expects.

One sizing rule, dots.ocr's own (Qwen2-VL's `smart_resize`, the rule vLLM applies when it serves the
checkpoint): each side is rounded to the nearest multiple of 28 (the vision patch 14 times the 2x2 merge);
if the area is then above the processor's `max_pixels`, both sides shrink by sqrt(area / max_pixels) and
are rounded down; if it is below `min_pixels`, both grow by sqrt(min_pixels / area) and are rounded up.
The image is resized once, bicubic, to those sides, so every image the official processor accepts gets
exactly vLLM's size and token count, and a box the model writes maps back exactly (a separate scale per
axis, since each side is rounded on its own). Nothing is enlarged beyond what `min_pixels` needs.

Tiny screen crops (one 12 px line, 180 x 14) are not enlarged further either: they become 224 x 28, what
vLLM would make of them. The earlier rule here lifted such a crop 4x (to a 56 px short side); that gave the
model an image no dots.ocr server would give it and boxes that disagreed with the official parser, for a
gain in reading that was never measured (no real weights can be run here). dots.ocr was trained through
this processor, so its rule is the one we keep; a person who wants larger glyphs can zoom before capturing.

Two additions, neither of which touches an image the official rule handles on its own terms:

* `max_image_size`, when set (the tray's `--max-image-size 1024` for small GPUs), caps the longest side:
  the image is first scaled uniformly so its longest side is that cap rounded down to a multiple of 28,
  then the rule above runs. 0 or None means no cap (the OpenAI route uses none, like vLLM).
* A strip longer than 200 times its width (a 3000 x 14 screen line), which `smart_resize` refuses, is
  padded with white at the right or bottom to exactly 200:1 first, instead of failing. The padded canvas is
  never built: the long side is resized on the strip alone, then the short side on a canvas holding only
  the lines that resize reads (`_resize_strip`), so a 1 KB PNG of 1,000,000 x 1 pixels costs megabytes, not
  the 14 GiB its padded canvas would. The image is the padded one resized, up to rounding (the passes may run
  in another order than Pillow's own). `SizePlan.work_bytes` says what preparing will allocate before
  anything is.

The resized image is handed to `Qwen2VLImageProcessorPil` with resizing switched off, so the processor
only normalises and cuts patches (in 2x2 merge-window order); we check its grid matches. The sizing
arithmetic is light (the remote engine sizes images too); torch and the processor are imported only when
patches are cut.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from dotocr.errors import DotOCRError, ModelUnavailableError
from dotocr.vision_grid import MERGE_SIZE, PATCH_SIZE

from .boxes import check_box

MAX_ASPECT_RATIO = 200
"""The longest side over the shortest that `smart_resize` accepts; longer strips are padded to it."""
STRIP_CHUNK_PIXELS = 4_000_000
"""Most pixels of the white canvas a strip's second resize pass builds at once (16 MB)."""
STRIP_TABLE_BYTES = 32 * 1024 * 1024
"""Largest filter table a strip's long side may need before it is first reduced (a side of 1,000,000 pixels)."""
STRIP_REDUCING_GAP = 3.0
"""Pillow's `reducing_gap` for such a side: reduced by whole pixels to 3x its size, then resized bicubic."""
_BICUBIC_SUPPORT = 2.0
"""Pillow's bicubic filter reaches 2 source pixels each way, times the scale when shrinking."""
RGB_BYTES = 4
"""Bytes Pillow keeps per RGB pixel (one spare byte each)."""

# The official dots.ocr preprocessor_config.json, used when no checkpoint folder is given.
DOTS_PREPROCESSOR_CONFIG: dict[str, Any] = {
    "min_pixels": 3136,
    "max_pixels": 11289600,
    "patch_size": PATCH_SIZE,
    "temporal_patch_size": 1,
    "merge_size": MERGE_SIZE,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
}
_PROCESSOR_KEYS = (
    "min_pixels", "max_pixels", "patch_size", "temporal_patch_size", "merge_size", "image_mean",
    "image_std", "do_rescale", "rescale_factor", "do_normalize", "do_convert_rgb",
)


# --------------------------------------------------------------------------------------------------
# sizing and patches


@dataclass
class PreparedImage:
    image: Image.Image
    """What the model sees: RGB, both sides multiples of 28."""
    original_size: tuple[int, int]
    scale: tuple[float, float]
    """Model pixels per input pixel, (x, y): each side is rounded to 28 on its own, so the two differ a little."""
    pad: tuple[int, int]
    """(right, bottom) white padding added before resizing, in input pixels (only past 200:1)."""
    pixel_values: Any
    """torch.FloatTensor of patches (None when only the size was planned, as the remote engine does)."""
    grid_thw: Any
    image_tokens: int

    @property
    def content_size(self) -> tuple[int, int]:
        """The part of `image` that shows the input, before any padding (model pixels)."""
        width, height = self.original_size
        return (min(self.image.width, max(1, round(width * self.scale[0]))),
                min(self.image.height, max(1, round(height * self.scale[1]))))

    def to_original(self, x: float, y: float) -> tuple[float, float]:
        """A point in model pixels as a point in input pixels, clamped to the input image."""
        width, height = self.original_size
        return _clamp(x / self.scale[0], 0.0, width), _clamp(y / self.scale[1], 0.0, height)

    def box_to_model(self, box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
        """A box (x1, y1, x2, y2) in input pixels as a box in model pixels; one that shows nothing is refused."""
        x1, y1, x2, y2 = check_box(box)
        width, height = self.original_size
        if x1 >= width or y1 >= height:
            raise DotOCRError(f"The box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) lies outside the {width} x {height} "
                              "image; give a box in the image's pixels.")
        (mx1, my1), (mx2, my2) = self.to_model(x1, y1), self.to_model(x2, y2)
        return round(mx1), round(my1), round(mx2), round(my2)

    def to_model(self, x: float, y: float) -> tuple[float, float]:
        """A point in input pixels as a point in model pixels, clamped to the shown content."""
        width, height = self.original_size
        return (_clamp(x * self.scale[0], 0.0, width * self.scale[0]),
                _clamp(y * self.scale[1], 0.0, height * self.scale[1]))


@dataclass(frozen=True)
class SizePlan:
    """Where an input of a given size ends up; pure arithmetic, so it can be checked for any size."""

    size: tuple[int, int]
    """The model's image, (width, height), both multiples of 28."""
    pad: tuple[int, int]
    """(right, bottom) white padding in input pixels, added before resizing (only past 200:1)."""
    original: tuple[int, int]

    @property
    def scale(self) -> tuple[float, float]:
        padded_w, padded_h = self.original[0] + self.pad[0], self.original[1] + self.pad[1]
        return self.size[0] / padded_w, self.size[1] / padded_h

    @property
    def work_bytes(self) -> int:
        """Memory `prepare` allocates on top of the input, padding included, reckoned before anything is
        allocated (a server checks it before decoding): Pillow's filter tables and first-pass rows and the model
        image; for a strip, its long side resized and one chunk of white canvas, never the padded canvas."""
        model = self.size[0] * self.size[1]
        width, height = self.original
        if self.pad == (0, 0):
            tables = _filter_bytes(width, self.size[0]) + _filter_bytes(height, self.size[1])
            return (model + self.size[0] * height) * RGB_BYTES + tables
        strip = _Strip.of(self)
        long_source = strip.long // strip.reduce
        chunk = min(strip.out_long, STRIP_CHUNK_PIXELS // strip.rows + 1) * (2 * strip.rows + strip.touched)
        reduced = long_source * strip.short if strip.reduce > 1 else 0
        return ((model + strip.out_long * strip.short + reduced + chunk) * RGB_BYTES
                + _filter_bytes(long_source, strip.out_long) + _filter_bytes(strip.padded, strip.touched))


def smart_resize(height: float, width: float, factor: int = PATCH_SIZE * MERGE_SIZE,
                 min_pixels: int = DOTS_PREPROCESSOR_CONFIG["min_pixels"],
                 max_pixels: int = DOTS_PREPROCESSOR_CONFIG["max_pixels"]) -> tuple[int, int]:
    """(height, width) as Qwen2-VL's processor sizes an image, step for step (vLLM uses that processor).

    Raises ValueError past MAX_ASPECT_RATIO, as the original does; `ImagePreparer.plan` pads before that.
    """
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(f"absolute aspect ratio must be at most {MAX_ASPECT_RATIO}, got "
                         f"{max(height, width) / min(height, width)}")
    return _fit(height, width, factor, min_pixels, max_pixels)


def _fit(height: float, width: float, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


class ImagePreparer:
    """Sizes images for dots.ocr and runs the checkpoint's own image processor on them."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        merged = {**DOTS_PREPROCESSOR_CONFIG, **(config or {})}
        self._processor_config = {k: merged[k] for k in _PROCESSOR_KEYS if k in merged}
        self._processor: Any = None
        self.patch_size = int(merged["patch_size"])
        self.merge_size = int(merged["merge_size"])
        self.min_pixels = int(merged["min_pixels"])
        self.max_pixels = int(merged["max_pixels"])
        self.image_mean = [float(v) for v in merged["image_mean"]]
        self.image_std = [float(v) for v in merged["image_std"]]
        self.factor = self.patch_size * self.merge_size

    @property
    def processor(self) -> Any:
        """The checkpoint's image processor, built on first use (it imports transformers and torch)."""
        if self._processor is None:
            from transformers import Qwen2VLImageProcessorPil

            self._processor = Qwen2VLImageProcessorPil(**self._processor_config)
        return self._processor

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

    def plan(self, width: int, height: int, max_image_size: int | None = None) -> SizePlan:
        """The size the module docstring's rule gives a `width` x `height` input (0 or None: no cap)."""
        if width < 1 or height < 1:
            raise ValueError(f"image size must be positive, got {width} x {height}")
        f = self.factor
        pad_w = pad_h = 0
        if width > MAX_ASPECT_RATIO * height:
            pad_h = math.ceil(width / MAX_ASPECT_RATIO) - height
        elif height > MAX_ASPECT_RATIO * width:
            pad_w = math.ceil(height / MAX_ASPECT_RATIO) - width
        w, h = width + pad_w, height + pad_h
        h_bar, w_bar = smart_resize(h, w, f, self.min_pixels, self.max_pixels)
        if max_image_size:
            limit = max(f, max_image_size // f * f)
            if max(h_bar, w_bar) > limit:
                # the longest side becomes the cap exactly, the other keeps the aspect ratio
                scaled_w, scaled_h = (limit, h * limit / w) if w >= h else (w * limit / h, limit)
                h_bar, w_bar = _fit(scaled_h, scaled_w, f, self.min_pixels, self.max_pixels)
                # the user's cap wins over min_pixels (a cap of 28 is allowed)
                h_bar, w_bar = min(h_bar, limit), min(w_bar, limit)
        return SizePlan(size=(w_bar, h_bar), pad=(pad_w, pad_h), original=(width, height))

    def prepare(self, image: Image.Image, max_image_size: int | None = None, *,
                patches: bool = True) -> PreparedImage:
        """Resize `image` (RGB, from `load_image`) by the rule; with `patches`, also cut the model's patches."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        plan = self.plan(image.width, image.height, max_image_size)
        if plan.pad != (0, 0):
            model_image = _resize_strip(image, plan)
        elif plan.size != image.size:
            model_image = image.resize(plan.size, Image.Resampling.BICUBIC)
        else:
            model_image = image.copy()

        grid_w, grid_h = model_image.width // self.patch_size, model_image.height // self.patch_size
        common = {"image": model_image, "original_size": image.size, "scale": plan.scale, "pad": plan.pad}
        if not patches:
            return PreparedImage(**common, pixel_values=None, grid_thw=None,
                                 image_tokens=grid_h * grid_w // (self.merge_size**2))
        import torch

        features = self.processor(images=model_image, do_resize=False, return_tensors="pt")
        pixel_values = features["pixel_values"].to(torch.float32)
        grid_thw = features["image_grid_thw"].to(torch.long)
        t, grid_h, grid_w = (int(v) for v in grid_thw[0])
        if (grid_w * self.patch_size, grid_h * self.patch_size) != model_image.size:
            raise RuntimeError(f"image processor resized {model_image.size} to a {grid_w} x {grid_h} patch grid")
        return PreparedImage(**common, pixel_values=pixel_values, grid_thw=grid_thw,
                             image_tokens=t * grid_h * grid_w // (self.merge_size**2))


@dataclass(frozen=True)
class _Strip:
    """A strip's geometry along its long side and its short (padded) side, whichever way it lies."""

    tall: bool
    long: int
    short: int
    padded: int
    """The short side with its white padding (200:1)."""
    out_long: int
    out_short: int
    touched: int
    """Output lines (along the short side) that can see the strip; the rest see only white."""
    rows: int
    """Canvas lines those output lines read."""
    reduce: int
    """Pillow's `reduce` factor taken on the long side first (1: none), so its filter table stays small."""

    @classmethod
    def of(cls, plan: SizePlan) -> _Strip:
        (width, height), (out_w, out_h) = plan.original, plan.size
        tall = plan.pad[0] > 0
        long, short, padded, out_long, out_short = ((height, width, width + plan.pad[0], out_h, out_w) if tall
                                                    else (width, height, height + plan.pad[1], out_w, out_h))
        step = padded / out_short  # canvas lines per output line
        reach = _BICUBIC_SUPPORT * max(step, 1.0)
        touched = min(out_short, math.floor((short + reach) / step) + 2)
        rows = min(padded, math.ceil(touched * step + reach) + 2)
        reduce = 1
        if _filter_bytes(long, out_long) > STRIP_TABLE_BYTES:
            reduce = max(1, int(long / out_long / STRIP_REDUCING_GAP))
        return cls(tall, long, short, padded, out_long, out_short, touched, rows, reduce)


def _resize_strip(image: Image.Image, plan: SizePlan) -> Image.Image:
    """`image` padded white as `plan.pad` says and resized to `plan.size`, without building the padded canvas.

    The long side first, on the strip alone; then the short side on a canvas holding only the lines that the
    output lines touching the strip read (the others read white only, and stay white), made in chunks of at
    most STRIP_CHUNK_PIXELS, so memory stays bounded however much padding there is.
    """
    strip = _Strip.of(plan)
    gap = STRIP_REDUCING_GAP if strip.reduce > 1 else None
    long_size = (image.width, strip.out_long) if strip.tall else (strip.out_long, image.height)
    resized = image.resize(long_size, Image.Resampling.BICUBIC, reducing_gap=gap) if long_size != image.size \
        else image
    out = Image.new("RGB", plan.size, (255, 255, 255))
    chunk = max(1, STRIP_CHUNK_PIXELS // strip.rows)
    span = strip.touched * strip.padded / strip.out_short
    for start in range(0, strip.out_long, chunk):
        part = min(chunk, strip.out_long - start)
        if strip.tall:
            canvas = Image.new("RGB", (strip.rows, part), (255, 255, 255))
            canvas.paste(resized.crop((0, start, strip.short, start + part)), (0, 0))
            piece = canvas.resize((strip.touched, part), Image.Resampling.BICUBIC, box=(0.0, 0.0, span, part))
            out.paste(piece, (0, start))
        else:
            canvas = Image.new("RGB", (part, strip.rows), (255, 255, 255))
            canvas.paste(resized.crop((start, 0, start + part, strip.short)), (0, 0))
            piece = canvas.resize((part, strip.touched), Image.Resampling.BICUBIC, box=(0.0, 0.0, part, span))
            out.paste(piece, (start, 0))
    return out


def _filter_bytes(source: int, target: int) -> int:
    """Pillow's filter table for resizing one axis: a double per target pixel per source pixel it reads (about
    4 x source / target when shrinking), so 32 bytes per source pixel: 180 MB for a 5,644,000-pixel side."""
    taps = math.ceil(2 * _BICUBIC_SUPPORT * max(source / target, 1.0)) + 2
    return target * taps * 8


def preparation_bytes(width: int, height: int, max_image_size: int | None = None) -> int:
    """What preparing a `width` x `height` image for dots.ocr will allocate (`SizePlan.work_bytes`), from its size
    alone: a server reckons it from the header, before a pixel is decoded."""
    return _DEFAULT_PREPARER.plan(width, height, max_image_size).work_bytes


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


_DEFAULT_PREPARER = ImagePreparer()
