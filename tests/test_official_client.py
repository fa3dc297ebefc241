"""dotocr-serve as a drop-in for dots.ocr's vLLM server: the official client's request, rebuilt exactly.

dots.ocr's parser sends each page as the `openai` client does in its `inference_with_vllm`: the image
re-encoded as a PNG data URL, the text `<|img|><|imgpad|><|endofimg|>` + the prompt, temperature 0.1,
top_p 0.9 (or 1.0), max_completion_tokens 16,384 (its client's default: 32,768), 16 pages at once from
threads. The server runs the real engine on the tiny checkpoint with the server's DEFAULT limits; the
checks are what the parser relies on: vLLM's token counts, boxes that map back, no 503 under its load.
"""

from __future__ import annotations

import base64
import io
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from PIL import Image, ImageDraw
from server_helpers import RecordingEngine, running_server, tiny_settings

from dotocr.engine.answers.cells import map_cells_to_original
from dotocr.engine.inputs.preprocessing import ImagePreparer
from dotocr.engine.inputs.prompts import PROMPT_LAYOUT_ALL_EN, PROMPT_OCR
from dotocr.server import ServerLimits
from dotocr.server.pacing import Pacing

pytestmark = pytest.mark.timeout(300)

PLACEHOLDER = "<|img|><|imgpad|><|endofimg|>"


def official_tokens(width: int, height: int) -> int:
    """Image tokens by transformers' Qwen2-VL smart_resize with the checkpoint's pixel limits (vLLM's rule)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    h, w = smart_resize(height, width, factor=28, min_pixels=3136, max_pixels=11289600)
    return (h // 28) * (w // 28)


def page(size: tuple[int, int], seed: int = 0) -> Image.Image:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    for line in range(max(1, size[1] // 40)):
        draw.text((10, 8 + line * 40), f"Line {line} of page {seed}", fill="black")
    return image


def image_to_data_url(image: Image.Image) -> str:
    """The official client's PILimage_to_base64: the image re-encoded as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def official_request(client: openai.OpenAI, image: Image.Image, prompt: str, *, top_p: float = 0.9,
                     max_completion_tokens: int = 16384):
    messages = [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": image_to_data_url(image)}},
        {"type": "text", "text": f"{PLACEHOLDER}{prompt}"},
    ]}]
    return client.chat.completions.create(messages=messages, model="model", temperature=0.1, top_p=top_p,
                                          max_completion_tokens=max_completion_tokens)


class BoundedEngine(RecordingEngine):
    """The real engine, recording each call's arguments as the request made them, then generating at most
    8 tokens: a random tiny model sampled at temperature 0.1 never stops on its own, and 16,384 tokens on a
    CPU take minutes. The cap the request asked for is what the assertions check (recorded before this)."""

    def ocr(self, image, **kwargs):  # type: ignore[override]
        self.calls.append(dict(kwargs, image_size=getattr(image, "size", None)))
        bounded = dict(kwargs, max_new_tokens=min(8, kwargs.get("max_new_tokens") or 8))
        return super(RecordingEngine, self).ocr(image, **bounded)


@pytest.fixture(scope="module")
def engine(dots_tiny: Path) -> RecordingEngine:
    # the tray's small-GPU cap is set, to show that the OpenAI route ignores it, as vLLM has none
    return BoundedEngine(tiny_settings(dots_tiny, max_image_size=224, max_new_tokens=8))


@pytest.fixture(scope="module")
def url(engine: RecordingEngine):
    with running_server(engine) as base:  # the default limits: no flags needed for the parser
        yield base


@pytest.fixture(scope="module")
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="0", max_retries=0, timeout=240)


@pytest.fixture(scope="module")
def tokenizer(dots_tiny: Path):
    from transformers import AutoTokenizer

    import dotocr.engine.model.modeling_dots_ocr  # noqa: F401 - registers dots_ocr with the Auto classes

    return AutoTokenizer.from_pretrained(dots_tiny)


@pytest.mark.parametrize("size", [(300, 170), (611, 95), (180, 14), (1000, 1013), (640, 28)])
def test_prompt_tokens_are_vllms_for_the_official_request(client, engine, tokenizer, size):
    completion = official_request(client, page(size), PROMPT_OCR)
    image_tokens = official_tokens(*size)
    # vLLM: the checkpoint's chat template, the placeholder expanded to the image's tokens, then tokenized
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": PLACEHOLDER + PROMPT_OCR}], tokenize=False)
    expanded = rendered.replace("<|imgpad|>", "<|imgpad|>" * image_tokens)
    assert completion.usage.prompt_tokens == len(tokenizer.encode(expanded, add_special_tokens=False))
    call = engine.calls[-1]
    assert (call["temperature"], call["top_p"], call["max_new_tokens"]) == (0.1, 0.9, 16384)
    assert call["max_image_size"] == 0 and call["instruction"] == PROMPT_OCR and call["system"] is None


def test_the_clients_default_token_cap_and_top_p_one_are_taken(client, engine):
    official_request(client, page((200, 120)), PROMPT_LAYOUT_ALL_EN, top_p=1.0, max_completion_tokens=32768)
    call = engine.calls[-1]
    assert (call["top_p"], call["max_new_tokens"], call["prompt"]) == (1.0, 32768, "layout")


@pytest.mark.parametrize("size", [(1654, 2339), (2480, 3508), (1000, 1013), (611, 95), (2800, 14)])
def test_a_known_box_round_trips_as_the_official_parser_maps_it(size):
    """The parser maps boxes with vLLM's sizing (input_width/height from smart_resize); so do we."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    width, height = size
    prepared = ImagePreparer().prepare(Image.new("RGB", size, "white"), 0, patches=False)
    input_height, input_width = smart_resize(height, width, min_pixels=3136, max_pixels=11289600)
    assert prepared.image.size == (input_width, input_height)
    box = [width * 0.1, height * 0.2, width * 0.7, height * 0.9]
    # the parser's pre-processing of a grounding box: original pixels -> model input pixels
    model_box = [round(box[0] * input_width / width), round(box[1] * input_height / height),
                 round(box[2] * input_width / width), round(box[3] * input_height / height)]
    assert list(prepared.box_to_model(tuple(box))) == model_box
    # the model answers in input pixels; our layout mapping and the parser's own agree within a pixel
    (cell,) = map_cells_to_original([{"bbox": model_box, "category": "Text", "text": "x"}], prepared)
    parser_box = [model_box[0] * width / input_width, model_box[1] * height / input_height,
                  model_box[2] * width / input_width, model_box[3] * height / input_height]
    for ours, theirs, original in zip(cell["bbox"], parser_box, box, strict=True):
        assert abs(ours - theirs) <= 1
        assert abs(ours - original) <= max(1.0, width / input_width, height / input_height)


def test_sixteen_pages_at_once_from_threads_never_get_503(client, engine):
    """The parser's default: 16 threads, each page with the official request; its client catches nothing."""
    sizes = [(400 + 20 * n, 300 + 10 * n) for n in range(16)]
    before = len(engine.calls)
    burn = threading.Event()

    def cpu_load() -> None:  # keep a core busy meanwhile: a loaded machine, not an idle one
        while not burn.is_set():
            sum(i * i for i in range(10_000))

    loader = threading.Thread(target=cpu_load, daemon=True)
    loader.start()
    try:
        with ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(official_request, client, page(size, n), PROMPT_LAYOUT_ALL_EN)
                       for n, size in enumerate(sizes)]
            completions = [f.result() for f in futures]  # an APIStatusError (503, 504) would raise here
    finally:
        burn.set()
        loader.join()
    assert len(completions) == 16 and all(c.choices[0].finish_reason in ("stop", "length") for c in completions)
    assert sorted(c["image_size"] for c in engine.calls[before:]) == sorted(sizes)
    for completion, size in zip(completions, sizes, strict=True):
        assert completion.usage.prompt_tokens > official_tokens(*size)


def test_sixty_four_requests_wait_in_line_with_the_default_limits(url):
    """The parser's recommendation for PDFs: 64 threads. Every one is answered 200, none refused."""
    defaults = ServerLimits()
    assert defaults.max_waiting + 1 >= 64 and defaults.request_timeout_s >= 3600
    body = {"model": "model", "temperature": 0.1, "top_p": 0.9, "max_completion_tokens": 2,
            "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": image_to_data_url(page((120, 60)))}},
                {"type": "text", "text": PLACEHOLDER + PROMPT_OCR}]}]}
    http = httpx.Client(timeout=240, limits=httpx.Limits(max_connections=64))
    with http, ThreadPoolExecutor(64) as pool:
        statuses = list(pool.map(lambda _n: http.post(f"{url}/v1/chat/completions", json=body).status_code,
                                 range(64)))
    assert statuses == [200] * 64


def test_retry_after_comes_from_recent_generation_times():
    pacing = Pacing(fallback_s=5)
    assert pacing.refused(in_line=3) == 5  # nothing measured yet
    pacing.admitted()
    for seconds in (2.0, 4.0, 3.0):
        pacing.finished(seconds)
    assert pacing.refused(in_line=3) == 3  # one place frees in about one generation
    assert pacing.refused(in_line=3) == 6  # the next refused client is sent back a generation later
    assert pacing.refused(in_line=3) == 9
    assert pacing.refused(in_line=3) == 9  # never more than the whole line's worth
    pacing.admitted()
    assert pacing.refused(in_line=3) == 3


def test_a_full_line_answers_503_with_the_estimate(dots_tiny: Path):
    from server_helpers import HeldEngine

    held = HeldEngine(tiny_settings(dots_tiny))
    with running_server(held, limits=ServerLimits(max_waiting=0)) as base:
        body = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": image_to_data_url(page((80, 40)))}}]}]}
        held.release.set()
        assert httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60).status_code == 200
        held.release.clear()
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(httpx.post, f"{base}/v1/chat/completions", json=body, timeout=60)
            while held.started < 2:
                threading.Event().wait(0.02)
            refused = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60)
            held.release.set()
            assert first.result().status_code == 200
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "1"  # one generation of the tiny model: well under a second


def png_bytes_of(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_default_memory_budget_holds_the_parsers_64_a4_pages():
    from dotocr.server.state import PREPARE_RESERVE_BYTES, decoded_cost

    a4 = decoded_cost((1654, 2339), "RGB")  # a page at 200 DPI, as the parser sends it
    assert 64 * a4 + PREPARE_RESERVE_BYTES <= ServerLimits().max_decoded_bytes and ServerLimits().max_bodies >= 64


def test_a_line_past_its_memory_budget_answers_503_with_the_estimate_and_recovers(dots_tiny: Path):
    from server_helpers import wait_until_ready

    from dotocr.server import start_background_server

    background = start_background_server(RecordingEngine(tiny_settings(dots_tiny)), 0)
    try:
        wait_until_ready(background.url)
        state = background._server.config.app.state.dotocr  # the running server's own state
        body = {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": image_to_data_url(page((400, 300)))}}]}]}
        url = f"{background.url}/v1/chat/completions"
        assert httpx.post(url, json=body, timeout=60).status_code == 200
        assert state.budget.used == 0
        held = state.budget.holdable - 1000  # other requests' images, waiting in line
        assert state.budget.reserve(held)
        refused = httpx.post(url, json=body, timeout=60)
        assert refused.status_code == 503 and refused.json()["error"]["type"] == "busy"
        assert refused.headers["Retry-After"] == "1"  # from the tiny model's recent generation time
        state.budget.release(held)
        upload = httpx.post(f"{background.url}/ocr", files={"file": ("p.png", png_bytes_of(page((400, 300))))},
                            timeout=60)
        assert upload.status_code == 200 and state.budget.used == 0
    finally:
        background.stop()
