"""The vision tower's pixel grid, the one place its numbers live.

dots.ocr cuts an image into 14 px patches and merges each 2 x 2 block of patches into one token, so every image
side the model sees is a multiple of 28 px, and 28 px is the smallest image it can read. Settings (the least
`max_image_size`), the image preparer and the engine's out-of-memory retry all derive from these. Top level and
import-free so the settings can use it without importing the engine.
"""

from __future__ import annotations

PATCH_SIZE = 14
"""Pixels per side of one vision patch."""
MERGE_SIZE = 2
"""Patches per side merged into one image token."""
IMAGE_FACTOR = PATCH_SIZE * MERGE_SIZE
"""Pixels per side of one image token: image sides are multiples of this (28)."""
