"""Where the model was unsure (issue 17): per-token probabilities become character spans of the answer's text."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from dotocr.engine.answers.confidence import low_confidence_spans
from tests.tiny_models import save_scripted_checkpoint
from tests.tray_helpers import ASSISTANT, END_OF_ANSWER

THE, QUICK, BROWN, FOX, JUMPS = 336, 469, 465, 431, 467  # "The", " quick", " brown", " fox", " jumps" (golden)


def test_an_unsure_token_marks_its_characters_not_its_space():
    pieces = [("The", 0.99), (" quick", 0.3), (" brown", 0.98)]
    assert low_confidence_spans(pieces, "The quick brown", "The quick brown", "text") == [[4, 9]]


def test_touching_unsure_tokens_make_one_span_and_a_split_character_lends_its_doubt():
    pieces = [("Gr", 0.99), ("", 0.2), ("ü", 0.9), ("n", 0.4), (" ok", 0.99)]  # "ü" came in two tokens
    assert low_confidence_spans(pieces, "Grün ok", "Grün ok", "text") == [[2, 4]]


def test_the_text_prompt_spans_follow_the_stripped_text():
    pieces = [("\n", 0.99), ("abc", 0.1), (" ", 0.99)]
    assert low_confidence_spans(pieces, "\nabc ", "abc", "text") == [[0, 3]]


def test_layout_spans_are_found_again_in_the_rebuilt_text_in_order():
    answer = '[{"bbox": [1, 2, 3, 4], "category": "Text", "text": "Tota1 42"}]'
    pieces = [(answer[:53], 0.99), ("Tota1", 0.2), (" 42", 0.99), (answer[61:], 0.99)]
    assert "".join(p for p, _ in pieces) == answer
    text = "Tota1 42"
    assert low_confidence_spans(pieces, answer, text, "layout") == [[0, 5]]


def test_pieces_that_do_not_add_up_to_the_answer_mark_nothing():
    assert low_confidence_spans([("ab", 0.1)], "abc", "abc", "text") == []


def _read(folder, decoder: str):
    from dotocr.config import Settings
    from dotocr.engine.inference import DotOCRInference

    engine = DotOCRInference(Settings(model=str(folder), device="cpu", precision="fp32", decoder=decoder,
                                      gguf_type="f32" if decoder == "llamacpp" else "", speculate="off"))
    try:
        return engine.ocr(Image.new("RGB", (120, 56), "white"), prompt="text", max_new_tokens=16)
    finally:
        engine.unload()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("decoder", ["torch", "llamacpp"])
def test_an_unsure_word_is_marked_on_both_decoders(decoder, dots_tiny, tmp_path):
    """A scripted model unsure of one word (' brown' against ' fox' and ' jumps' after ' quick'): its span alone."""
    if decoder == "llamacpp":
        pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (CI installs it)")
    chain = {ASSISTANT: THE, THE: QUICK, QUICK: BROWN, BROWN: END_OF_ANSWER}
    folder = save_scripted_checkpoint(tmp_path / "unsure", dots_tiny, chain, doubt={QUICK: (FOX, JUMPS)})
    result = _read(folder, decoder)
    assert result.text == "The quick brown"
    assert result.low_confidence == [[10, 15]] and result.text[10:15] == "brown"
    assert [round(p, 1) for _, p in result.pieces][:3] == [1.0, 1.0, 0.4]
    assert json.loads(json.dumps(result.to_json_dict()))["low_confidence"] == [[10, 15]]
    assert "pieces" not in result.to_json_dict()
