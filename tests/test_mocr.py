"""dots.mocr's prompts (issue 17, item 5): the official texts, what each answer becomes, how a checkpoint is
recognised as dots.mocr, and the tray's Output items and default for it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from PIL import Image

from dotocr.config import MOCR_PROMPTS, PROMPT_MODES, Settings, SettingsFile, setting_sources
from dotocr.engine import Engine, is_dots_mocr, make_engine
from dotocr.engine.answers.formatting import format_answer
from dotocr.engine.inputs import prompts
from dotocr.engine.inputs.preprocessing import ImagePreparer
from dotocr.engine.inputs.prompts import build_prompt, instruction_for, system_for
from dotocr.tray.choices import OUTPUT_CHOICES, model_card_defaults, output_key, output_keys
from tests.tiny_models import save_answer_checkpoint

# The values of `dict_promptmode_to_prompt` in dots.mocr's dots_mocr/utils/prompts.py, as Python evaluates them
# (read in two copies of the official file: the forks mcfly5/dots.mocr.api and
# southtownWangtongxue/Project3-Multimodal-RAG agree byte for byte on these entries).
OFFICIAL = {
    "prompt_web_parsing": "Parsing the layout info of this webpage image with format json:\n",
    "prompt_scene_spotting": "Detect and recognize the text in the image.",
    "prompt_image_to_svg": 'Please generate the SVG code based on the image.viewBox="0 0 {width} {height}"',
    "prompt_general": " ",
}


def test_the_official_texts_byte_for_byte():
    assert OFFICIAL["prompt_web_parsing"] == prompts.PROMPT_WEB_PARSING
    assert OFFICIAL["prompt_scene_spotting"] == prompts.PROMPT_SCENE_SPOTTING
    assert OFFICIAL["prompt_image_to_svg"] == prompts.PROMPT_IMAGE_TO_SVG
    assert OFFICIAL["prompt_general"] == prompts.PROMPT_GENERAL
    # what the official parser sends for prompt_general without a question of the caller's, and its system turn
    assert prompts.GENERAL_QUESTION == "Please describe the content of this image."
    assert prompts.GENERAL_SYSTEM == "You are a helpful assistant."


def test_each_is_a_prompt_value_and_a_tray_choice():
    assert set(MOCR_PROMPTS) <= set(PROMPT_MODES)
    assert {prompt for _label, prompt, _format in OUTPUT_CHOICES.values()} >= set(MOCR_PROMPTS)
    assert instruction_for("web") == OFFICIAL["prompt_web_parsing"]
    assert instruction_for("scene-text") == OFFICIAL["prompt_scene_spotting"]
    assert instruction_for("general") == prompts.GENERAL_QUESTION


def test_the_svg_instruction_carries_the_input_images_size_as_the_official_parser_writes_it():
    assert instruction_for("svg", size=(640, 480)) == (
        'Please generate the SVG code based on the image.viewBox="0 0 640 480"')
    assert instruction_for("svg") == OFFICIAL["prompt_image_to_svg"]  # the template, for comparing instructions


def test_only_the_general_prompt_has_a_system_turn():
    assert system_for("general") == "You are a helpful assistant."
    assert all(system_for(mode) is None for mode in PROMPT_MODES if mode != "general")


class Recorder(Engine):
    """Records the resolved call; generates nothing."""

    def _generate(self, picture, call):
        self.call = call
        raise LookupError("recorded")


@pytest.mark.parametrize(("prompt", "system"), [("general", "You are a helpful assistant."), ("web", None)])
def test_the_engine_sends_the_prompt_modes_own_system_turn(prompt, system):
    engine = Recorder(Settings(barcodes=False))
    with pytest.raises(LookupError):
        engine.ocr(Image.new("RGB", (64, 48), "white"), prompt=prompt)
    assert engine.call.system == system
    with pytest.raises(LookupError):  # the caller's own instruction: no system turn added
        engine.ocr(Image.new("RGB", (64, 48), "white"), prompt=prompt, instruction="What is this?")
    assert engine.call.system is None


def test_the_general_prompt_renders_like_the_chat_template_with_its_system_turn():
    assert build_prompt(instruction_for("general"), 2, system_for("general")) == (
        "<|system|>You are a helpful assistant.<|endofsystem|>\n<|user|><|img|><|imgpad|><|imgpad|><|endofimg|>"
        "Please describe the content of this image.<|endofuser|><|assistant|>")


PREPARED = ImagePreparer().prepare(Image.new("RGB", (2000, 1000), "white"), 1024)  # 1008 x 504 for the model


def test_scene_text_becomes_its_lines_with_corners_in_input_pixels():
    raw = "(10, 20), (110, 20), (110, 40), (10, 40) OPEN 24/7\n(504, 252), (1008, 252), (1008, 504), (504, 504) EXIT"
    text, cells = format_answer("scene-text", raw, PREPARED, Image.new("RGB", (2000, 1000)))
    assert text == "OPEN 24/7\nEXIT"
    assert cells[1] == {"bbox": [1000, 500, 2000, 1000], "points": [1000, 500, 2000, 500, 2000, 1000, 1000, 1000],
                        "category": "Text", "text": "EXIT"}
    assert format_answer("scene-text", "no corners here", PREPARED, Image.new("RGB", (2000, 1000))) == (
        "no corners here", None)


def test_svg_answers_are_the_svg_alone():
    raw = 'Here it is:\n```xml\n<svg viewBox="0 0 2 2"><rect width="1" height="1"/></svg>\n```'
    assert format_answer("svg", raw, PREPARED, Image.new("RGB", (2000, 1000)))[0] == (
        '<svg viewBox="0 0 2 2"><rect width="1" height="1"/></svg>')


def test_web_parsing_answers_cells_read_like_the_layout_prompts():
    raw = json.dumps([{"bbox": [0, 0, 504, 50], "category": "Title", "text": "# Shop"},
                      {"bbox": [0, 60, 504, 200], "category": "Table",
                       "text": "<table><tr><td>Tea</td><td>3</td></tr></table>"}])
    text, cells = format_answer("web", raw, PREPARED, Image.new("RGB", (2000, 1000)))
    assert text == "# Shop\n\n| Tea | 3 |\n| --- | --- |" and cells[0]["bbox"] == [0, 0, 1000, 99]


def test_an_svg_answer_end_to_end_asks_with_the_images_size(tmp_path, dots_tiny):
    folder = save_answer_checkpoint(tmp_path / "svg", dots_tiny, ['<svg viewBox="0 0 200 100"></svg>'])
    engine = make_engine(Settings(model=str(folder), device="cpu", precision="fp32", decoder="torch",
                                  max_new_tokens=4, max_image_size=448))
    result = engine.ocr(Image.new("RGB", (200, 100), "white"), prompt="svg")
    assert result.text == '<svg viewBox="0 0 200 100"></svg>' and result.prompt == "svg"
    svg_tokens = result.prompt_tokens
    assert svg_tokens > engine.ocr(Image.new("RGB", (200, 100), "white"), prompt="text").prompt_tokens


@pytest.mark.parametrize(("model", "mocr"), [
    ("rednote-hilab/dots.mocr", True), ("rednote-hilab/dots.mocr-svg", True), ("/models/DotsMOCR", True),
    ("C:\\models\\dots_mocr", True), ("/hf/hub/models--rednote-hilab--dots.mocr/snapshots/0a1b2c", True),
    ("rednote-hilab/dots.ocr", False), ("/models/DotsOCR", False), ("/data/democracy", False),
])
def test_dots_mocr_is_recognised_by_its_name(model, mocr):
    assert is_dots_mocr(model) is mocr


def test_the_tray_offers_dots_mocrs_items_only_with_dots_mocr():
    assert output_keys(Settings()) == ("text", "markdown")
    assert output_keys(Settings(model="/models/DotsMOCR")) == ("text", "markdown", *MOCR_PROMPTS)
    remote = Settings(engine="remote", remote_model="rednote-hilab/dots.mocr")
    assert output_keys(remote) == ("text", "markdown", *MOCR_PROMPTS)
    assert output_key(Settings(prompt="web", output_format="markdown")) == "web"
    assert output_key(Settings(prompt="layout-json")) == "text"


def sources(tmp_path: Path, text: str = "", **flags) -> dict[str, str]:
    settings_file = SettingsFile(tmp_path / "settings.toml")
    if text:
        settings_file.path.write_text(text, encoding="utf-8")
    return setting_sources(argparse.Namespace(**flags), settings_file, environ={})


def test_the_trays_default_for_dots_mocr_follows_its_model_card(tmp_path):
    mocr = Settings(model="rednote-hilab/dots.mocr")
    assert model_card_defaults(mocr, sources(tmp_path)) == {"prompt": "layout", "output_format": "markdown"}
    assert model_card_defaults(Settings(), sources(tmp_path)) == {}  # dots.ocr keeps plain text
    assert model_card_defaults(mocr, sources(tmp_path, 'prompt = "text"\n')) == {}  # a choice made is kept
    assert model_card_defaults(mocr, sources(tmp_path, prompt="scene-text")) == {}
    assert OUTPUT_CHOICES["markdown"][1:] == ("layout", "markdown")

