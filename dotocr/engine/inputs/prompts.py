"""The dots.ocr and dots.mocr instructions and the exact token layout of a one-image prompt.

The instruction strings are the official ones (dots.ocr's `dots_ocr/utils/prompts.py`, dots.mocr's
`dots_mocr/utils/prompts.py`): the models were trained on exactly this wording, so they are kept byte for byte.
The grounding instruction is followed by the box in model-input pixels, written the way the official parser writes
a list of ints: "[x1, y1, x2, y2]". dots.mocr's SVG instruction carries the input image's size, filled in as its
parser does; its general prompt is a placeholder the parser never sends: it asks the caller's question, by default
GENERAL_QUESTION, after the system turn GENERAL_SYSTEM (dots.mocr's `parser.py` and `demo_vllm_general.py`).

Prompt layout (the checkpoint's chat template for one user turn with one image, after an optional system turn):
    [<|system|>SYSTEM<|endofsystem|>\n]
    <|user|><|img|><|imgpad|> x image_tokens <|endofimg|>INSTRUCTION<|endofuser|><|assistant|>
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dotocr.config import MOCR_PROMPTS, PROMPT_MODES
from dotocr.errors import DotOCRError, ModelUnavailableError

from ..model.spellings import ASSISTANT, END_SYSTEM, END_USER, IMAGE_END, IMAGE_PAD, IMAGE_START, SYSTEM, USER
from .boxes import four_numbers

__all__ = ["MOCR_PROMPTS", "PROMPT_MODES", "build_prompt", "encode_prompt", "instruction_for", "resolve_prompt",
           "strip_image_placeholder", "system_for"]

PROMPT_OCR = "Extract the text content from this image."

PROMPT_LAYOUT_ALL_EN = """Please output the layout information from the PDF image, including each layout element's bbox, its category, and the corresponding text content within the bbox.

1. Bbox format: [x1, y1, x2, y2]

2. Layout Categories: The possible categories are ['Caption', 'Footnote', 'Formula', 'List-item', 'Page-footer', 'Page-header', 'Picture', 'Section-header', 'Table', 'Text', 'Title'].

3. Text Extraction & Formatting Rules:
    - Picture: For the 'Picture' category, the text field should be omitted.
    - Formula: Format its text as LaTeX.
    - Table: Format its text as HTML.
    - All Others (Text, Title, etc.): Format their text as Markdown.

4. Constraints:
    - The output text must be the original text from the image, with no translation.
    - All layout elements must be sorted according to human reading order.

5. Final Output: The entire output must be a single JSON object.
"""  # noqa: E501 - the official wording, kept on its original lines

PROMPT_GROUNDING_OCR = (
    "Extract text from the given bounding box on the image (format: [x1, y1, x2, y2]).\nBounding Box:\n"
)

# dots.mocr (rednote-hilab, March 2026): `dict_promptmode_to_prompt` in dots_mocr/utils/prompts.py
PROMPT_WEB_PARSING = "Parsing the layout info of this webpage image with format json:\n"
"""prompt_web_parsing: a web page's layout as JSON cells, read like the layout prompt's."""
PROMPT_SCENE_SPOTTING = "Detect and recognize the text in the image."
"""prompt_scene_spotting: lines of "(x1, y1), (x2, y2), (x3, y3), (x4, y4) text", one per text instance."""
PROMPT_IMAGE_TO_SVG = 'Please generate the SVG code based on the image.viewBox="0 0 {width} {height}"'
"""prompt_image_to_svg: {width} and {height} are the input image's size, replaced as the official parser does."""
PROMPT_GENERAL = " "
"""prompt_general, as the table holds it: a placeholder that the official parser replaces by the question."""
GENERAL_QUESTION = "Please describe the content of this image."
"""What dots.mocr's parser asks under prompt_general when the caller brings no question of its own."""
GENERAL_SYSTEM = "You are a helpful assistant."
"""The system turn dots.mocr's parser and demo send with prompt_general ("general tasks need system_prompt")."""

IMAGE_PLACEHOLDER = IMAGE_START + IMAGE_PAD + IMAGE_END
"""What OpenAI-style clients put before the instruction to mark where the image goes."""

_INSTRUCTIONS = {"text": PROMPT_OCR, "layout": PROMPT_LAYOUT_ALL_EN, "layout-json": PROMPT_LAYOUT_ALL_EN,
                 "web": PROMPT_WEB_PARSING, "scene-text": PROMPT_SCENE_SPOTTING, "svg": PROMPT_IMAGE_TO_SVG,
                 "general": GENERAL_QUESTION}


def resolve_prompt(prompt: str | None, *, output_format: str | None = None, bbox: Any = None,
                   instruction: str | None = None, default: str = "text") -> str:
    """The prompt mode for one call: the one rule every front end and engine uses.

    An explicit `prompt` wins; else a bbox means grounding; else Markdown output asks for the layout prompt
    (headings, tables and formulas rather than flat text) unless the settings chose a prompt other than plain
    text; else `default`, the settings' prompt. A grounding prompt needs a box and a box needs the grounding
    prompt, unless the caller brings its own instruction. A contradiction is one sentence (DotOCRError), which
    a front end may show before any model loads.
    """
    if prompt is None:
        if bbox is not None:
            prompt = "grounding"
        elif output_format == "markdown" and default == "text":
            prompt = "layout"
        else:
            prompt = default
    _check_mode(prompt)
    if instruction is not None and not _encodable(instruction):
        raise DotOCRError("The instruction holds a lone surrogate (\\ud800 to \\udfff), which is not text; "
                          "send it as valid UTF-8.")
    if instruction is None:
        if prompt == "grounding" and bbox is None:
            raise DotOCRError("The grounding prompt needs a bounding box (bbox: x1, y1, x2, y2 in image pixels).")
        if prompt != "grounding" and bbox is not None:
            raise DotOCRError(f"A bounding box only applies to the grounding prompt, not to {prompt!r}; "
                              "drop the box or use the grounding prompt.")
    return prompt


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def instruction_for(mode: str, bbox: Sequence[float] | None = None, size: tuple[int, int] | None = None) -> str:
    """The instruction for a prompt mode; `bbox` (model-input pixels) is used by grounding only, `size` (the input
    image's width and height) by svg only, which without it is the official template with {width} and {height}."""
    _check_mode(mode)
    if mode == "grounding":
        return PROMPT_GROUNDING_OCR + format_bbox(bbox)
    if mode == "svg" and size is not None:
        width, height = size
        return PROMPT_IMAGE_TO_SVG.replace("{width}", str(width)).replace("{height}", str(height))
    return _INSTRUCTIONS[mode]


def system_for(mode: str) -> str | None:
    """The system turn a prompt mode's official parser sends with its own instruction: only dots.mocr's general one."""
    return GENERAL_SYSTEM if mode == "general" else None


def _check_mode(mode: str) -> None:
    if mode not in PROMPT_MODES:
        raise DotOCRError(f"Unknown prompt {mode!r}; use one of {', '.join(PROMPT_MODES)}.")


def format_bbox(bbox: Sequence[float] | None) -> str:
    """A box as "[x1, y1, x2, y2]" in whole pixels, corners sorted so x1 <= x2 and y1 <= y2."""
    if bbox is None:
        raise DotOCRError("The grounding prompt needs a bounding box; pass x1, y1, x2, y2 in image pixels.")
    x1, y1, x2, y2 = (round(v) for v in four_numbers(bbox))
    return str([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)])


def strip_image_placeholder(text: str) -> str:
    """Drop a leading "<|img|><|imgpad|><|endofimg|>" (OpenAI clients send it; we place the image)."""
    stripped = text.lstrip()
    if stripped.startswith(IMAGE_PLACEHOLDER):
        return stripped[len(IMAGE_PLACEHOLDER):]
    return text


def build_prompt(instruction: str, image_tokens: int, system: str | None = None) -> str:
    """The prompt as text; `encode_prompt` produces the same ids without tokenizing the pads."""
    head = SYSTEM + system + END_SYSTEM + "\n" if system is not None else ""
    return head + USER + IMAGE_START + IMAGE_PAD * image_tokens + IMAGE_END + instruction + END_USER + ASSISTANT


def encode_prompt(tokenizer: Any, instruction: str, image_tokens: int, *, system: str | None = None) -> list[int]:
    """Token ids of `build_prompt(instruction, image_tokens, system)`.

    The markers are placed as ids directly and only the instruction goes through the tokenizer,
    with special-token text in it split like ordinary text: a client that writes "<|imgpad|>" in
    its instruction must not add image slots the vision features cannot fill.
    """
    if image_tokens < 0:
        raise ValueError(f"image_tokens must not be negative, got {image_tokens}")
    markers = (USER, IMAGE_START, IMAGE_PAD, IMAGE_END, END_USER, ASSISTANT)
    user, start, pad, end, end_user, assistant = (_special_id(tokenizer, marker) for marker in markers)
    text_ids = _text_ids(tokenizer, instruction)
    # The template's system markers are not special tokens in the dots.ocr vocabulary (it has
    # <|systemprompt|> instead), so vLLM tokenizes the whole system turn as text; so do we.
    head = _text_ids(tokenizer, SYSTEM + system + END_SYSTEM + "\n") if system is not None else []
    return [*head, user, start, *([pad] * image_tokens), end, *text_ids, end_user, assistant]


def _text_ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)) if text else []


def _special_id(tokenizer: Any, marker: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(marker)
    if not isinstance(token_id, int) or token_id == tokenizer.unk_token_id:
        raise ModelUnavailableError(
            f"The tokenizer has no {marker} token, so it is not a dots.ocr tokenizer; "
            f"point the model setting at a dots.ocr checkpoint."
        )
    return token_id
