"""Turn a decoded RGB image (see `images.py`) into the exact pixels and patches dots.ocr expects.

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
The sizing arithmetic is light (the remote engine sizes images too); torch and the processor are
imported only when patches are cut.
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

TINY_SHORT_SIDE = 56
MAX_TEXT_UPSCALE = 4.0
MAX_ASPECT_RATIO = 200

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
    scale: float
    """Model pixels per original pixel (the same on both axes)."""
    pad: tuple[int, int]
    """(right, bottom) white padding added, in model pixels."""
    pixel_values: Any
    """torch.FloatTensor of patches (None when only the size was planned, as the remote engine does)."""
    grid_thw: Any
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
        x1, y1, x2, y2 = check_box(box)
        width, height = self.original_size
        if x1 >= width or y1 >= height:
            raise DotOCRError(f"The box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) lies outside the {width} x {height} "
                              "image; give a box in the image's pixels.")
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
        merged = {**DOTS_PREPROCESSOR_CONFIG, **(config or {})}
        self._processor_config = {k: merged[k] for k in _PROCESSOR_KEYS if k in merged}
        self._processor: Any = None
        self.patch_size = int(merged["patch_size"])
        self.merge_size = int(merged["merge_size"])
        self.min_pixels = int(merged["min_pixels"])
        self.max_pixels = int(merged["max_pixels"])
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

    def prepare(self, image: Image.Image, max_image_size: int, *, patches: bool = True) -> PreparedImage:
        """Resize and pad `image` (RGB, from `load_image`); with `patches`, also cut the model's patches."""
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

        grid_w, grid_h = canvas.width // self.patch_size, canvas.height // self.patch_size
        if not patches:
            return PreparedImage(image=canvas, original_size=image.size, scale=plan.scale, pad=plan.pad,
                                 pixel_values=None, grid_thw=None,
                                 image_tokens=grid_h * grid_w // (self.merge_size**2))
        import torch

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
