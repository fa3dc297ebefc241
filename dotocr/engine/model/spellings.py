"""How a dots.ocr checkpoint spells things, in one table: weight names and the chat template's special tokens.

Everything that reads a checkpoint by name (the loader, the vision tower loaded alone, the GGUF and mmproj
writers) and everything that writes or reads the chat template (the prompt, the remote engine's stop list, the
GGUF's end-of-turn token) takes the spelling from here, as vLLM's `WeightsMapper` keeps a model's names in one
place. Light on purpose: no torch, so the remote engine can use it.
"""

from __future__ import annotations

import re

# -- weights -------------------------------------------------------------------------------------------------

VISION_PREFIX = "vision_tower."
"""Every weight of the vision tower (patch embedding, blocks, merger) starts with this."""
DECODER_PREFIXES = ("model.", "lm_head.")
"""The Qwen2 language model's weights: its layers and norms under `model.`, and the untied output head."""

WEIGHT_ALIASES = {
    r"\.attn\.qkv_proj\.": ".attn.qkv.",
    r"\.attn\.out_proj\.": ".attn.proj.",
}
"""Later dots checkpoints spell the vision attention projections differently; mapped to ours at load."""


def vision_weight_name(name: str) -> str | None:
    """A checkpoint weight's name inside the vision tower module (prefix dropped, aliases mapped), or None
    when the weight is not the tower's."""
    if not name.startswith(VISION_PREFIX):
        return None
    key = name[len(VISION_PREFIX):]
    for pattern, replacement in WEIGHT_ALIASES.items():
        key = re.sub(pattern, replacement, key)
    return key


# -- the chat template's special tokens ---------------------------------------------------------------------

USER, END_USER, ASSISTANT = "<|user|>", "<|endofuser|>", "<|assistant|>"
SYSTEM, END_SYSTEM = "<|system|>", "<|endofsystem|>"
"""The system markers are not special tokens in dots.ocr's vocabulary: vLLM tokenizes a system turn as text."""
IMAGE_START, IMAGE_PAD, IMAGE_END = "<|img|>", "<|imgpad|>", "<|endofimg|>"
END_OF_TEXT = "<|endoftext|>"
END_OF_ANSWER = "<|endofassistant|>"
"""dots.ocr ends an answer with this, not with end-of-text: a stop token for every decoder and server."""
STOP_TOKENS = (END_OF_TEXT, END_OF_ANSWER)
"""The stop tokens when a checkpoint's generation_config names none."""
