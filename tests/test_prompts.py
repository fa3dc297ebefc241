"""Prompt wording and token layout, checked against the tiny checkpoint's real tokenizer."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import dotocr.engine.model.modeling_dots_ocr  # noqa: F401 - registers dots_ocr, so AutoTokenizer never asks about remote code
from dotocr.engine.inputs.prompts import (
    PROMPT_GROUNDING_OCR,
    PROMPT_LAYOUT_ALL_EN,
    PROMPT_MODES,
    PROMPT_OCR,
    build_prompt,
    encode_prompt,
    instruction_for,
    strip_image_placeholder,
)
from dotocr.errors import DotOCRError, ModelUnavailableError

pytestmark = pytest.mark.timeout(120)

IDS = {"<|endoftext|>": 978, "<|imgpad|>": 1000, "<|img|>": 1001, "<|endofimg|>": 1002, "<|user|>": 1005,
       "<|endofuser|>": 1006, "<|assistant|>": 1007, "<|endofassistant|>": 1008}


@pytest.fixture(scope="module")
def tokenizer(dots_tiny: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(dots_tiny)


def test_modes_match_the_settings():
    from dotocr.config import PROMPT_MODES as SETTINGS_MODES

    assert PROMPT_MODES == SETTINGS_MODES


def test_official_wording():
    assert instruction_for("text") == "Extract the text content from this image." == PROMPT_OCR
    assert instruction_for("layout") == instruction_for("layout-json") == PROMPT_LAYOUT_ALL_EN
    assert PROMPT_LAYOUT_ALL_EN.startswith(
        "Please output the layout information from the PDF image, including each layout element's bbox, "
        "its category, and the corresponding text content within the bbox.\n\n"
        "1. Bbox format: [x1, y1, x2, y2]\n")
    for rule in ("    - Picture: For the 'Picture' category, the text field should be omitted.\n",
                 "    - Formula: Format its text as LaTeX.\n", "    - Table: Format its text as HTML.\n",
                 "    - All Others (Text, Title, etc.): Format their text as Markdown.\n",
                 "    - All layout elements must be sorted according to human reading order.\n"):
        assert rule in PROMPT_LAYOUT_ALL_EN
    assert PROMPT_LAYOUT_ALL_EN.endswith("5. Final Output: The entire output must be a single JSON object.\n")
    assert PROMPT_GROUNDING_OCR == (
        "Extract text from the given bounding box on the image (format: [x1, y1, x2, y2]).\nBounding Box:\n")


def test_grounding_appends_the_box_in_whole_pixels():
    assert instruction_for("grounding", (10.4, 20.6, 300, 40)) == PROMPT_GROUNDING_OCR + "[10, 21, 300, 40]"
    assert instruction_for("grounding", [300, 40, 10, 20]).endswith("[10, 20, 300, 40]")  # corners sorted


@pytest.mark.parametrize("bbox", [None, (1, 2, 3), (1, 2, 3, float("nan")), ("a", 1, 2, 3), (True, 1, 2, 3)])
def test_grounding_without_a_usable_box_is_a_clear_error(bbox):
    with pytest.raises(DotOCRError) as caught:
        instruction_for("grounding", bbox)
    assert "\n" not in str(caught.value) and "box" in str(caught.value)


def test_unknown_mode_names_the_choices():
    with pytest.raises(DotOCRError) as caught:
        instruction_for("poem")
    assert "poem" in str(caught.value) and "layout-json" in str(caught.value)


def test_strip_image_placeholder():
    assert strip_image_placeholder("<|img|><|imgpad|><|endofimg|>Extract the text.") == "Extract the text."
    assert strip_image_placeholder("  <|img|><|imgpad|><|endofimg|>Read it") == "Read it"
    inside = "Read <|img|><|imgpad|><|endofimg|>"
    assert strip_image_placeholder(inside) == inside
    assert strip_image_placeholder("plain") == "plain"


def test_build_prompt_layout():
    assert build_prompt("Do it.", 3) == (
        "<|user|><|img|><|imgpad|><|imgpad|><|imgpad|><|endofimg|>Do it.<|endofuser|><|assistant|>")


def test_tokenizer_markers_have_the_documented_ids(tokenizer):
    for marker, token_id in IDS.items():
        assert tokenizer.convert_tokens_to_ids(marker) == token_id


@pytest.mark.parametrize("mode", PROMPT_MODES)
@pytest.mark.parametrize("image_tokens", [1, 6, 187])
def test_encode_prompt_matches_tokenizing_the_whole_prompt(tokenizer, mode, image_tokens):
    instruction = instruction_for(mode, (1, 2, 30, 40) if mode == "grounding" else None)
    ids = encode_prompt(tokenizer, instruction, image_tokens)
    assert ids == tokenizer.encode(build_prompt(instruction, image_tokens), add_special_tokens=False)
    assert ids[:2] == [1005, 1001] and ids[-2:] == [1006, 1007]
    assert ids[2:2 + image_tokens] == [1000] * image_tokens and ids[2 + image_tokens] == 1002
    assert ids.count(1000) == image_tokens
    assert tokenizer.decode(ids[3 + image_tokens:-2]) == instruction


@pytest.mark.parametrize("system", ["You are a careful OCR engine.", " ", ""])
def test_system_turn_is_rendered_as_the_checkpoints_chat_template(tokenizer, system):
    """vLLM renders messages with the checkpoint's own template, then tokenizes; our ids must be the same."""
    instruction = instruction_for("layout")
    user = IMAGE_TEXT * 1 + instruction
    rendered = tokenizer.apply_chat_template(
        [{"role": "system", "content": system}, {"role": "user", "content": user}], tokenize=False)
    assert rendered.startswith("<|system|>" + system + "<|endofsystem|>\n<|user|>")
    expected = tokenizer.encode(rendered.replace(IMAGE_TEXT, "<|img|>" + "<|imgpad|>" * 6 + "<|endofimg|>"),
                                add_special_tokens=False)
    assert encode_prompt(tokenizer, instruction, 6, system=system) == expected
    assert build_prompt(instruction, 6, system) == rendered.replace(
        IMAGE_TEXT, "<|img|>" + "<|imgpad|>" * 6 + "<|endofimg|>")


IMAGE_TEXT = "<|img|><|imgpad|><|endofimg|>"


def test_marker_text_inside_an_instruction_adds_no_image_slots(tokenizer):
    ids = encode_prompt(tokenizer, "Describe <|imgpad|><|img|> this.", 4)
    assert ids.count(1000) == 4 and ids.count(1001) == 1


def test_encode_prompt_is_fast_for_5000_image_tokens(tokenizer):
    encode_prompt(tokenizer, PROMPT_LAYOUT_ALL_EN, 5000)
    started = time.perf_counter()
    for _ in range(20):
        ids = encode_prompt(tokenizer, PROMPT_LAYOUT_ALL_EN, 5000)
    per_call = (time.perf_counter() - started) / 20
    assert ids.count(1000) == 5000
    assert per_call < 0.01, f"{per_call * 1000:.1f} ms per prompt"


def test_a_tokenizer_without_the_markers_is_refused():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    plain = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    with pytest.raises(ModelUnavailableError) as caught:
        encode_prompt(plain, "a", 2)
    assert "<|user|>" in str(caught.value)
