"""dotocr-serve against the second red team (issue 18): tiny uploads that cost gigabytes to decode, pad or render,
form fields that cost seconds to parse. Real HTTP on loopback, the real engine on the tiny checkpoint."""

from __future__ import annotations

import io
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image
from server_helpers import RecordingEngine, chat_messages, running_server, tiny_settings

from dotocr.server import ServerLimits

pytestmark = pytest.mark.timeout(180)

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def engine(dots_tiny: Path) -> RecordingEngine:
    return RecordingEngine(tiny_settings(dots_tiny))


def grey_png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, 0).save(buffer, format="PNG")
    return buffer.getvalue()


def upload(url: str, data: bytes, name: str = "shot.png", **fields: str) -> httpx.Response:
    return httpx.post(f"{url}/ocr", files={"file": (name, data)}, data=fields, timeout=120)


def test_a_tiny_strip_is_read_in_seconds(engine: RecordingEngine) -> None:
    """A 1 KB PNG of 1,000,000 x 1 pixels padded to 200:1 once asked for a 14 GiB canvas (HTTP 500)."""
    strip = grey_png((1_000_000, 1))
    assert len(strip) < 1500
    with running_server(engine) as url:
        started = time.monotonic()
        response = upload(url, strip)
        assert response.status_code == 200, response.text
        assert time.monotonic() - started < 30
        assert response.json()["width"] == 1_000_000


def test_the_memory_budget_counts_what_preparing_an_image_takes(engine: RecordingEngine) -> None:
    """The budget once counted 9 bytes a pixel for this strip (1.8 MB) and then padded it to an 800 MB canvas;
    now what preparing it takes is reckoned from the header, before a pixel is decoded."""
    with running_server(engine, limits=ServerLimits(max_decoded_bytes=64 * MIB)) as url:
        body = {"model": "m", "max_tokens": 1, "messages": chat_messages(grey_png((200_000, 1)))}
        response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
        assert response.status_code == 400, response.text
        message = response.json()["error"]["message"]
        assert "200000 x 1 pixels" in message and "MiB once decoded and prepared" in message
        assert len(message) < 300 and "\n" not in message
