"""The remote engine against Ollama's differences, with a stand-in for Ollama on loopback.

Ollama cannot run on these machines (it is not on PyPI and ollama.com is out of reach), so this is a fake at
that boundary, and says so. It answers only what the remote engine relies on, as Ollama's documentation and
issue tracker describe it: the OpenAI API under /v1 (nothing at /models), `GET /api/version`, models listed
with owned_by "library" and asked for by their pulled name, images only as base64 data URLs, a streamed answer
with usage, and, for a model imported without its vision part, the 500 "this model is missing data required
for image input". The same engine code is exercised for real against llama-server in test_llama_server.py.
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from engine_contract import sample_image
from server_helpers import stand_in, tiny_settings

from dotocr.engine.inputs.prompts import IMAGE_PLACEHOLDER, instruction_for
from dotocr.engine.remote import RemoteEngine
from dotocr.errors import RemoteEngineError

pytestmark = pytest.mark.timeout(60)


class _OllamaStandIn(BaseHTTPRequestHandler):
    models: list[str] = []
    vision = True
    bodies: list[dict] = []

    def _json(self, status: int, data: dict) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/api/version":
            self._json(200, {"version": "0.12.6"})
        elif self.path == "/v1/models":
            self._json(200, {"object": "list", "data": [
                {"id": name, "object": "model", "created": 1, "owned_by": "library"} for name in self.models]})
        else:
            self._json(404, {"error": "404 page not found"})

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.bodies.append(body)
        if body.get("model") not in self.models:
            self._json(404, {"error": {"message": f"model \"{body.get('model')}\" not found, try pulling it first",
                                       "type": "api_error"}})
            return
        if not self.vision:
            self._json(500, {"error": {"message": "Failed to create new sequence: failed to process inputs: this "
                                       "model is missing data required for image input", "type": "api_error"}})
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        chunks = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": piece},
                                "finish_reason": None}]} for piece in ("Hello", " there")]
        chunks.append({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "finish_reason": "stop"}]})
        chunks.append({"choices": [], "usage": {"prompt_tokens": 40, "completion_tokens": 3, "total_tokens": 43}})
        for chunk in chunks:
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def ollama():
    _OllamaStandIn.models, _OllamaStandIn.vision, _OllamaStandIn.bodies = ["dots-ocr:latest", "llama3:8b"], True, []
    with stand_in(_OllamaStandIn) as url:
        yield url


def engine(url: str, **changes) -> RemoteEngine:
    return RemoteEngine(tiny_settings(Path("unused"), engine="remote", remote_url=url, **changes))


def test_ollama_gets_its_own_request(ollama):
    """Its bare address works (/v1 found), the image goes first as a data URL, the instruction without the
    placeholder (Ollama places the image), the end of answer as a stop string, the pulled model's name."""
    remote = engine(ollama, remote_model="dots-ocr:latest")
    result = remote.ocr(sample_image())
    assert remote.server_kind == "ollama"
    assert (result.text, result.stop_reason, result.prompt_tokens, result.generated_tokens) == (
        "Hello there", "eos", 40, 3)
    (body,) = _OllamaStandIn.bodies
    image, text = body["messages"][-1]["content"]
    assert image["image_url"]["url"].startswith("data:image/png;base64,")
    assert text == {"type": "text", "text": instruction_for("text")} and IMAGE_PLACEHOLDER not in text["text"]
    assert body["model"] == "dots-ocr:latest" and body["stop"] == ["<|endofassistant|>"]


def test_several_models_and_none_named_is_one_sentence_naming_them(ollama):
    with pytest.raises(RemoteEngineError) as caught:
        engine(ollama).load()  # remote_model left at its default, "model"
    message = str(caught.value)
    assert "'dots-ocr:latest', 'llama3:8b'" in message and "remote_model" in message and message.endswith(".")
    assert _OllamaStandIn.bodies == []


def test_the_only_model_is_taken_when_none_is_named(ollama):
    _OllamaStandIn.models = ["dots-ocr:latest"]
    assert engine(ollama).ocr(sample_image()).text == "Hello there"
    assert _OllamaStandIn.bodies[0]["model"] == "dots-ocr:latest"


def test_a_model_without_its_vision_part_is_one_sentence(ollama):
    _OllamaStandIn.vision = False
    with pytest.raises(RemoteEngineError) as caught:
        engine(f"{ollama}/v1", remote_model="dots-ocr:latest").ocr(sample_image())
    message = str(caught.value)
    assert "without its vision part" in message and "'dots-ocr:latest'" in message and "\n" not in message
