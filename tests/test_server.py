"""dotocr-serve's routes over real HTTP: the curl upload, the OpenAI-compatible chat, health, models.

A real uvicorn server on a free loopback port serves the real engine on the tiny checkpoint; httpx and
the `openai` client talk to it.
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import threading
from pathlib import Path

import httpx
import openai
import pytest
from PIL import Image
from server_helpers import (
    PLACEHOLDER,
    TEXT_INSTRUCTION,
    HeldLoadEngine,
    RecordingEngine,
    chat_messages,
    data_url,
    png_bytes,
    running_server,
    tiny_settings,
    wait_until_ready,
)

from dotocr.engine import DotOCRInference, OCRResult
from dotocr.engine.inputs.prompts import instruction_for
from dotocr.engine.results import JSON_FIELDS

pytestmark = pytest.mark.timeout(180)

OCR_FIELDS = set(JSON_FIELDS)
STOP_REASONS = {"eos", "max_new_tokens", "repetition", "cancelled"}


@pytest.fixture(scope="module")
def engine(dots_tiny: Path) -> RecordingEngine:
    return RecordingEngine(tiny_settings(dots_tiny))


@pytest.fixture(scope="module")
def url(engine: RecordingEngine):
    with running_server(engine) as base:
        yield base


@pytest.fixture(scope="module")
def reference(dots_tiny: Path) -> DotOCRInference:
    """A second engine in the test process: what `dotocr ocr` would compute for the same image."""
    engine = DotOCRInference(tiny_settings(dots_tiny))
    engine.load()
    return engine


@pytest.fixture(scope="module")
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


def upload(url: str, data: bytes, name: str = "shot.png", **fields: str) -> httpx.Response:
    return httpx.post(f"{url}/ocr", files={"file": (name, data, "image/png")}, data=fields, timeout=60)


def assert_error(response: httpx.Response, status: int, *words: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == status
    assert "Traceback" not in error["message"] and error["message"].endswith(".")
    for word in words:
        assert word.lower() in error["message"].lower(), error["message"]
    return error


# -- health and models ---------------------------------------------------------------------------------

def test_health_says_ready_with_device_precision_and_model(url: str, dots_tiny: Path) -> None:
    health = httpx.get(f"{url}/health").json()
    assert health["service"] == "dotocr"
    assert health["status"] == "ready"
    assert (health["device"], health["precision"], health["model"]) == ("cpu", "fp32", str(dots_tiny))
    assert health["engine"] == "local"


def test_models_lists_the_served_model(client: openai.OpenAI, dots_tiny: Path) -> None:
    assert [model.id for model in client.models.list().data] == [str(dots_tiny)]


# -- POST /ocr ------------------------------------------------------------------------------------------

def test_ocr_upload_returns_the_cli_json_object(url: str, reference: DotOCRInference) -> None:
    image = png_bytes((180, 50))
    response = upload(url, image, prompt="text")
    assert response.status_code == 200, response.text
    body = response.json()
    expected = reference.ocr(image, prompt="text", output_format="text", file="shot.png").to_json_dict()
    assert set(body) == set(expected) == OCR_FIELDS - {"cells", "page", "dpi", "codes"}  # page, dpi: PDF pages only
    for volatile in ("timings",):
        assert set(body[volatile]) == {"preprocess", "prefill", "decode", "total", "draft_tokens", "accepted_tokens"}
        del body[volatile], expected[volatile]
    assert body == expected  # same model, same greedy decoding: what `dotocr ocr --format json` prints
    assert (body["width"], body["height"]) == (180, 50)
    assert body["file"] == "shot.png" and body["stop_reason"] in STOP_REASONS


def test_ocr_form_fields_reach_the_engine(url: str, engine: RecordingEngine) -> None:
    response = upload(url, png_bytes(), prompt="grounding", bbox="10,5,90,40", format="text",
                      max_new_tokens="2")
    assert response.status_code == 200, response.text
    assert response.json()["prompt"] == "grounding" and response.json()["generated_tokens"] <= 2
    call = engine.calls[-1]
    assert call["bbox"] == (10.0, 5.0, 90.0, 40.0) and call["max_new_tokens"] == 2

    response = upload(url, png_bytes(), prompt="layout-json")
    assert response.status_code == 200
    assert response.json()["prompt"] == "layout-json" and isinstance(response.json()["cells"], list)

    response = upload(url, png_bytes(), format="markdown")  # markdown without a prompt: the layout prompt
    assert response.status_code == 200 and response.json()["prompt"] == "layout"


def test_max_new_tokens_is_capped_by_the_server_setting(url: str, engine: RecordingEngine) -> None:
    assert upload(url, png_bytes(), max_new_tokens="100000").status_code == 200
    assert engine.calls[-1]["max_new_tokens"] == engine.settings.max_new_tokens


@pytest.mark.parametrize(("fields", "status", "words"), [
    ({"prompt": "poem"}, 400, ("prompt", "text, layout")),
    ({"format": "pdf"}, 400, ("format",)),
    ({"prompt": "grounding"}, 400, ("grounding", "bbox")),
    ({"bbox": "1,2,3"}, 400, ("bbox", "four numbers")),
    ({"bbox": "50,50,10,10"}, 400, ("x2 > x1",)),
    ({"max_new_tokens": "0"}, 400, ("max_new_tokens",)),
    ({"max_new_tokens": "many"}, 400, ("max_new_tokens",)),
])
def test_bad_form_fields_get_one_sentence(url: str, fields: dict, status: int, words: tuple) -> None:
    assert_error(upload(url, png_bytes(), **fields), status, *words)


def test_missing_file_field_is_named(url: str) -> None:
    response = httpx.post(f"{url}/ocr", files={"image": ("a.png", png_bytes(), "image/png")}, timeout=30)
    assert_error(response, 400, "file")


def test_upload_filename_is_reported_never_used_as_a_path(url: str, tmp_path: Path) -> None:
    name = "../../../../tmp/dotocr-evil.png"
    response = upload(url, png_bytes(), name=name)
    assert response.status_code == 200 and response.json()["file"] == name
    assert not Path("/tmp/dotocr-evil.png").exists()


# -- POST /v1/chat/completions ------------------------------------------------------------------------------

def test_chat_completion_with_the_official_client_shape(client: openai.OpenAI, url: str,
                                                         engine: RecordingEngine) -> None:
    image = png_bytes((200, 60), "chat")
    completion = client.chat.completions.create(model="model", messages=chat_messages(image), max_tokens=4,
                                                temperature=0.0)
    call = engine.calls[-1]
    assert call["instruction"] == TEXT_INSTRUCTION  # the placeholder is dropped, not doubled
    assert call["prompt"] == "text"
    direct = upload(url, image, prompt="text").json()
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == direct["raw"]
    assert choice.finish_reason == ("length" if direct["stop_reason"] == "max_new_tokens" else "stop")
    usage = completion.usage
    # same prompt length as the plain upload: one image placeholder in the tokens, not two
    assert usage.prompt_tokens == direct["prompt_tokens"]
    assert usage.completion_tokens == direct["generated_tokens"]
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert completion.model == "model"


def test_chat_messages_are_rendered_as_vllm_renders_them(client: openai.OpenAI,
                                                         engine: RecordingEngine) -> None:
    image = png_bytes()
    image_part = {"type": "image_url", "image_url": {"url": data_url(image)}}
    # no placeholder in the text: vLLM puts it first, joined to the text by "\n"
    client.chat.completions.create(model="m", messages=chat_messages(image, TEXT_INSTRUCTION))
    assert engine.calls[-1]["instruction"] == "\n" + TEXT_INSTRUCTION and engine.calls[-1]["prompt"] == "text"
    # several text parts are joined with "\n"; whitespace is passed through, not replaced
    parts = [image_part, {"type": "text", "text": PLACEHOLDER + "Read"}, {"type": "text", "text": " it "}]
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": parts}])
    assert engine.calls[-1]["instruction"] == "Read\n it "
    client.chat.completions.create(model="m", messages=chat_messages(image, PLACEHOLDER + "  "))
    assert engine.calls[-1]["instruction"] == "  "
    # a system message becomes the template's system turn
    system = [{"role": "system", "content": "You read documents."}, *chat_messages(image)]
    client.chat.completions.create(model="m", messages=system)
    assert engine.calls[-1]["system"] == "You read documents."
    assert engine.calls[-1]["instruction"] == TEXT_INSTRUCTION
    # only an image, no text part at all: the server's own prompt setting ("text")
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": [image_part]}])
    assert engine.calls[-1]["instruction"] is None and engine.calls[-1]["system"] is None
    # the OpenAI route adds no size cap of its own: dots.ocr's sizing, like vLLM
    assert engine.calls[-1]["max_image_size"] == 0


def test_chat_system_turn_adds_its_tokens(client: openai.OpenAI) -> None:
    image = png_bytes()
    plain = client.chat.completions.create(model="m", messages=chat_messages(image), max_tokens=1)
    with_system = client.chat.completions.create(
        model="m", messages=[{"role": "system", "content": "Be exact."}, *chat_messages(image)], max_tokens=1)
    assert with_system.usage.prompt_tokens > plain.usage.prompt_tokens


@pytest.mark.parametrize(("messages", "words"), [
    ([{"role": "user", "content": [{"type": "text", "text": "hi"}]},
      {"role": "assistant", "content": "hello"}], ("last message",)),
    ([{"role": "assistant", "content": "earlier"}], ("one page per request",)),
    ([{"role": "user", "content": [{"type": "text", "text": "x " + PLACEHOLDER}]}], ("at the start",)),
])
def test_chat_turns_we_cannot_render_get_one_sentence(url: str, messages, words: tuple) -> None:
    image_part = {"type": "image_url", "image_url": {"url": data_url(png_bytes())}}
    for message in messages:
        if message["role"] == "user":
            message["content"].insert(0, image_part)
    if messages[-1]["role"] != "user" and messages[0]["role"] == "assistant":
        messages.append({"role": "user", "content": [image_part]})
    response = httpx.post(f"{url}/v1/chat/completions", json={"model": "m", "messages": messages}, timeout=30)
    assert_error(response, 400, *words)


def test_chat_layout_instruction_is_parsed_as_the_layout_mode(client: openai.OpenAI,
                                                              engine: RecordingEngine) -> None:
    client.chat.completions.create(model="m", messages=chat_messages(png_bytes(),
                                                                     PLACEHOLDER + instruction_for("layout")))
    assert engine.calls[-1]["prompt"] == "layout"


def test_chat_honours_sampling_and_token_limits(client: openai.OpenAI, engine: RecordingEngine) -> None:
    completion = client.chat.completions.create(model="m", messages=chat_messages(png_bytes()),
                                                temperature=0.7, top_p=0.9, max_completion_tokens=2)
    call = engine.calls[-1]
    assert (call["temperature"], call["top_p"], call["max_new_tokens"]) == (0.7, 0.9, 2)
    assert completion.usage.completion_tokens <= 2
    client.chat.completions.create(model="m", messages=chat_messages(png_bytes()), max_tokens=3)
    assert engine.calls[-1]["max_new_tokens"] == 3 and engine.calls[-1]["temperature"] == 0.0
    # the official parser's cap and its client's default are honoured, not cut to the server's setting
    client.chat.completions.create(model="m", messages=chat_messages(png_bytes()), max_tokens=16384)
    assert engine.calls[-1]["max_new_tokens"] == 16384
    client.chat.completions.create(model="m", messages=chat_messages(png_bytes()), max_tokens=100_000)
    assert engine.calls[-1]["max_new_tokens"] == 32768
    client.chat.completions.create(model="m", messages=chat_messages(png_bytes()))
    assert engine.calls[-1]["max_new_tokens"] == engine.settings.max_new_tokens  # none asked: the setting


def test_chat_streaming_matches_the_plain_answer(client: openai.OpenAI) -> None:
    messages = chat_messages(png_bytes((120, 40), "stream"))
    plain = client.chat.completions.create(model="m", messages=messages)
    stream = client.chat.completions.create(model="m", messages=messages, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content and text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [plain.choices[0].finish_reason]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_streaming_is_server_sent_events_ending_in_done(url: str) -> None:
    body = {"model": "m", "messages": chat_messages(png_bytes()), "stream": True}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]"
    first = json.loads(events[0][6:])
    assert first["object"] == "chat.completion.chunk" and first["choices"][0]["delta"]["role"] == "assistant"


@pytest.mark.parametrize(("content", "words"), [
    ("just text", ("image_url",)),
    ([{"type": "text", "text": "no image here"}], ("exactly one image_url", "not 0")),
    ([{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}], ("does not fetch",)),
    ([{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}], ("base64",)),
    ([{"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}}], ("base64",)),
    ([{"type": "image_url", "image_url": {"url": data_url(b"not an image")}}], ("not an image",)),
])
def test_chat_bad_requests_get_one_sentence(url: str, content, words: tuple) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": content}]}
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code in (400, 415)
    assert_error(response, response.status_code, *words)


def test_chat_bad_request_reaches_openai_client_as_its_error(client: openai.OpenAI) -> None:
    two_images = chat_messages(png_bytes())
    two_images[0]["content"].insert(0, {"type": "image_url", "image_url": {"url": data_url(png_bytes())}})
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="m", messages=two_images)
    assert "exactly one image_url part, not 2" in str(caught.value)


@pytest.mark.parametrize("body", [
    b"{not json",
    json.dumps({"model": "m", "messages": []}).encode(),
    json.dumps({"messages": [{"role": "user", "content": "x"}], "n": 2}).encode(),
    json.dumps({"messages": [{"role": "user", "content": "x"}], "temperature": 9}).encode(),
])
def test_chat_invalid_bodies_are_422_json(url: str, body: bytes) -> None:
    response = httpx.post(f"{url}/v1/chat/completions", content=body,
                          headers={"content-type": "application/json"}, timeout=30)
    assert_error(response, 422, "invalid request")


def test_unknown_route_and_method_are_json(url: str) -> None:
    assert_error(httpx.get(f"{url}/nope"), 404, "/nope")
    assert_error(httpx.get(f"{url}/ocr"), 405, "GET")


# -- loading and load failure -------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_requests_during_loading_get_503_loading_with_retry_after(dots_tiny: Path) -> None:
    engine = HeldLoadEngine(tiny_settings(dots_tiny))
    with running_server(engine, wait=False) as base:
        health = httpx.get(f"{base}/health").json()
        assert health["status"] == "loading"
        for response in (
            upload(base, png_bytes()),
            httpx.post(f"{base}/v1/chat/completions",
                       json={"model": "m", "messages": chat_messages(png_bytes())}),
        ):
            error = assert_error(response, 503, "loading")
            assert error["type"] == "loading"
            assert int(response.headers["retry-after"]) > 0
        threading.Timer(0.2, engine.release.set).start()
        assert wait_until_ready(base)["status"] == "ready"
        assert upload(base, png_bytes()).status_code == 200


@pytest.mark.timeout(90)
def test_a_model_that_cannot_load_is_reported_then_recovers(tmp_path: Path, dots_tiny: Path) -> None:
    folder = tmp_path / "model-arrives-later"
    engine = DotOCRInference(tiny_settings(dots_tiny, model=str(folder)))
    with running_server(engine) as base:
        health = httpx.get(f"{base}/health").json()
        assert health["status"] == "error" and "model-arrives-later" in health["detail"]
        error = assert_error(upload(base, png_bytes()), 503, "model-arrives-later")
        assert error["type"] == "model_unavailable"
        stream = {"model": "m", "messages": chat_messages(png_bytes()), "stream": True}
        response = httpx.post(f"{base}/v1/chat/completions", json=stream, timeout=60)
        assert_error(response, 503, "model-arrives-later")  # a proper status, not a 200 stream that fails
        shutil.copytree(dots_tiny, folder)  # the cause is fixed: the next request loads the model
        assert upload(base, png_bytes()).status_code == 200
        assert httpx.get(f"{base}/health").json()["status"] == "ready"


def test_corrupt_image_is_400_from_the_engine_check(url: str) -> None:
    image = png_bytes((300, 300))
    assert_error(upload(url, image[: len(image) // 2], name="cut.png"), 400, "truncated")


def test_ocr_reads_a_jpeg_upload_too(url: str) -> None:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(png_bytes())).save(buffer, format="JPEG")
    response = upload(url, buffer.getvalue(), name="shot.jpg")
    assert response.status_code == 200 and response.json()["file"] == "shot.jpg"


def test_the_answer_schema_is_the_result_type_itself():
    """One owner for the JSON contract: the /ocr schema is made from OCRResult, so a field added there can never
    be dropped or left undocumented by the server."""

    from dotocr.server.schemas import OCRResponse

    assert list(OCRResponse.model_fields) == [f.name for f in dataclasses.fields(OCRResult) if f.name != "pieces"]
    result = OCRResult(text="a", raw="a", prompt="layout", stop_reason="eos", width=3, height=4, image_tokens=1,
                       prompt_tokens=9, generated_tokens=2, device="cpu", precision="fp32",
                       timings={"total": 0.5}, cells=[{"bbox": [0, 0, 1, 1], "category": "Text", "text": "a"}])
    data = result.to_json_dict()
    assert OCRResponse.model_validate(data).model_dump(exclude_unset=True) == data
