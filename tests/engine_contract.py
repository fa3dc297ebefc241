"""Behaviour every engine must show, local or remote. Test modules subclass `EngineContract` and provide
an `engine` fixture (ready to use, on a tiny checkpoint) and `make_image`."""

from __future__ import annotations

import io
import json
import struct
import threading
import zlib

import pytest
from PIL import Image, ImageDraw

from dotocr.engine import OCRResult
from dotocr.errors import DotOCRError, ImageError


def sample_image(width: int = 200, height: int = 60, text: str = "Hello 42") -> Image.Image:
    image = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(image).text((8, height // 3), text, fill="black")
    return image


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(width: int = 60000, height: int = 60000) -> bytes:
    """A valid PNG header claiming a huge image: decoding it would need gigabytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def zero_size_png() -> bytes:
    return bomb_png(0, 0)


STOP_REASONS = {"eos", "max_new_tokens", "repetition", "cancelled"}

BAD_INPUTS = {
    "not an image": b"this is a text file, not a picture",
    "truncated": png_bytes(sample_image())[:200],
    "zero size": zero_size_png(),
    "decompression bomb": bomb_png(),
}


class EngineContract:
    MAX_NEW = 6

    def test_result_fields(self, engine):
        image = sample_image(333, 77)
        result = engine.ocr(image, max_new_tokens=self.MAX_NEW)
        assert isinstance(result, OCRResult)
        assert (result.width, result.height) == (333, 77)
        assert result.prompt == "text"
        assert result.stop_reason in STOP_REASONS
        assert 1 <= result.generated_tokens <= self.MAX_NEW
        assert result.image_tokens > 0 and result.prompt_tokens > result.image_tokens
        assert set(result.timings) >= {"preprocess", "prefill", "decode", "total"}
        assert result.timings["total"] >= result.timings["decode"] >= 0
        assert result.device and result.precision
        data = result.to_json_dict()
        json.dumps(data)
        assert {"text", "raw", "stop_reason", "width", "height", "image_tokens", "generated_tokens"} <= set(data)

    @pytest.mark.parametrize("prompt", ["text", "layout", "layout-json", "grounding"])
    def test_every_prompt_mode(self, engine, prompt):
        bbox = (10, 5, 120, 40) if prompt == "grounding" else None
        result = engine.ocr(sample_image(), prompt=prompt, bbox=bbox, max_new_tokens=self.MAX_NEW)
        assert result.prompt == prompt
        if prompt == "layout-json":
            assert isinstance(json.loads(result.text), list)

    def test_each_mode_sends_its_own_instruction(self, engine):
        image = sample_image()
        tokens = {mode: engine.ocr(image, prompt=mode, bbox=(10, 5, 120, 40) if mode == "grounding" else None,
                                   max_new_tokens=1).prompt_tokens
                  for mode in ("text", "layout", "grounding")}
        # same image, so the difference is the instruction: layout-all is far longer than the text prompt
        assert tokens["layout"] > tokens["grounding"] > tokens["text"]

    def test_a_bbox_alone_means_grounding(self, engine):
        assert engine.ocr(sample_image(), bbox=(10, 5, 120, 40), max_new_tokens=1).prompt == "grounding"

    @pytest.mark.parametrize("bbox", [(500, 500, 900, 900), (50, 40, 10, 45), (-5, 0, 50, 40)])
    def test_a_box_that_shows_nothing_is_refused(self, engine, bbox):
        with pytest.raises(DotOCRError, match="box") as info:
            engine.ocr(sample_image(200, 60), bbox=bbox, max_new_tokens=1)
        assert "\n" not in str(info.value)

    def test_a_bbox_with_another_prompt_is_refused(self, engine):
        with pytest.raises(DotOCRError, match="grounding"):
            engine.ocr(sample_image(), prompt="text", bbox=(10, 5, 120, 40), max_new_tokens=1)

    def test_max_new_tokens_stop(self, engine):
        result = engine.ocr(sample_image(), max_new_tokens=3)
        assert result.generated_tokens <= 3 and result.stop_reason in ("max_new_tokens", "eos")

    def test_image_tokens_follow_the_size_limit(self, engine):
        small = engine.ocr(sample_image(120, 40), max_new_tokens=1).image_tokens
        large = engine.ocr(sample_image(1200, 400), max_new_tokens=1).image_tokens
        limit = engine.settings.max_image_size
        assert small < large <= (limit // 28) ** 2

    def test_grounding_without_bbox_is_refused(self, engine):
        with pytest.raises(DotOCRError, match="bounding box"):
            engine.ocr(sample_image(), prompt="grounding", max_new_tokens=2)

    @pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
    def test_bad_input_gives_one_sentence(self, engine, kind):
        with pytest.raises(ImageError) as info:
            engine.ocr(BAD_INPUTS[kind], max_new_tokens=2)
        message = str(info.value)
        assert message and "\n" not in message and "Traceback" not in message
        # and the engine still works afterwards
        assert engine.ocr(sample_image(), max_new_tokens=2).generated_tokens >= 1

    def test_accepts_path_bytes_and_pil(self, engine, tmp_path):
        image = sample_image(120, 40)
        path = tmp_path / "shot.png"
        image.save(path)
        for source in (image, str(path), path, png_bytes(image)):
            assert engine.ocr(source, max_new_tokens=2).width == 120

    def test_concurrent_callers_all_answered(self, engine):
        results: list[OCRResult] = []
        errors: list[BaseException] = []

        def call(i: int) -> None:
            try:
                results.append(engine.ocr(sample_image(100 + 28 * i, 50), max_new_tokens=3))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors
        assert sorted(r.width for r in results) == [100, 128, 156, 184]

    def test_streamed_text_adds_up_to_the_answer(self, engine):
        pieces: list[str] = []
        result = engine.ocr(sample_image(), max_new_tokens=self.MAX_NEW, on_text=pieces.append)
        assert all(isinstance(p, str) for p in pieces)
        assert "".join(pieces).strip() == result.raw.strip()
