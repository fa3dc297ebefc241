"""dotocr-serve's OpenAI route returns logprobs when asked, in vLLM's shape (issue 17), and dotocr's remote engine
pointed at it underlines what the local engine underlines. Real uvicorn on loopback, a scripted checkpoint unsure
of one word."""

from __future__ import annotations

import json
import math
from pathlib import Path

import httpx
import openai
import pytest
from server_helpers import chat_messages, png_bytes, running_server, tiny_settings
from tiny_models import save_scripted_checkpoint

from dotocr.engine import DotOCRInference
from dotocr.engine.remote import RemoteEngine
from tests.test_low_confidence import BROWN, FOX, JUMPS, QUICK, THE
from tests.tray_helpers import ASSISTANT, END_OF_ANSWER

pytestmark = pytest.mark.timeout(180)

ANSWER = "The quick brown"


@pytest.fixture(scope="module")
def local(tmp_path_factory, dots_tiny: Path) -> DotOCRInference:
    chain = {ASSISTANT: THE, THE: QUICK, QUICK: BROWN, BROWN: END_OF_ANSWER}
    folder = save_scripted_checkpoint(tmp_path_factory.mktemp("unsure"), dots_tiny, chain,
                                      doubt={QUICK: (FOX, JUMPS)})
    return DotOCRInference(tiny_settings(folder, max_image_size=1024, max_new_tokens=16))


@pytest.fixture(scope="module")
def url(local: DotOCRInference):
    with running_server(local) as base:
        yield base


def chat(url: str, **extra) -> httpx.Response:
    body = {"model": "m", "messages": chat_messages(png_bytes()), **extra}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)


def events(response: httpx.Response) -> list[dict]:
    lines = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_logprobs_in_vllms_shape_when_asked_and_null_when_not(url: str) -> None:
    choice = chat(url, logprobs=True, top_logprobs=2).json()["choices"][0]
    tokens = choice["logprobs"]["content"]
    assert "".join(t["token"] for t in tokens) == choice["message"]["content"] == ANSWER
    assert [t["token"] for t in tokens] == ["The", " quick", " brown"]
    assert [round(math.exp(t["logprob"]), 1) for t in tokens] == [1.0, 1.0, 0.4]  # unsure of " brown"
    assert all(t["bytes"] == list(t["token"].encode()) and t["top_logprobs"] == [] for t in tokens)
    assert chat(url).json()["choices"][0]["logprobs"] is None
    assert chat(url, logprobs=False).json()["choices"][0]["logprobs"] is None


def test_streamed_the_logprobs_come_with_the_finish(url: str) -> None:
    chunks = events(chat(url, stream=True, logprobs=True))
    with_logprobs = [c for c in chunks if c["choices"] and c["choices"][0]["logprobs"] is not None]
    assert len(with_logprobs) == 1 and with_logprobs[0]["choices"][0]["finish_reason"] == "stop"
    tokens = with_logprobs[0]["choices"][0]["logprobs"]["content"]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == ANSWER
    assert "".join(t["token"] for t in tokens) == ANSWER
    assert all(c["choices"][0]["logprobs"] is None for c in events(chat(url, stream=True)) if c["choices"])


def test_the_openai_client_reads_them(url: str) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
    answer = client.chat.completions.create(model="m", messages=chat_messages(png_bytes()), logprobs=True)
    assert [t.token for t in answer.choices[0].logprobs.content] == ["The", " quick", " brown"]


@pytest.mark.parametrize("extra", [{"logprobs": "yes"}, {"logprobs": 1}, {"top_logprobs": 21},
                                   {"top_logprobs": -1}])
def test_a_bad_logprobs_field_is_one_sentence(url: str, extra: dict) -> None:
    response = chat(url, **extra)
    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert ("logprobs" in message) and "\n" not in message, message


@pytest.mark.parametrize("stream", [False, True])
def test_the_remote_engine_at_dotocr_serve_marks_what_the_local_engine_marks(url: str, local, stream: bool
                                                                             ) -> None:
    from PIL import Image

    shot = Image.new("RGB", (224, 56), "white")
    here = local.ocr(shot, prompt="text")
    assert (here.text, here.low_confidence) == (ANSWER, [[10, 15]])
    remote = RemoteEngine(tiny_settings(Path("unused"), engine="remote", remote_url=f"{url}/v1",
                                        max_image_size=1024, max_new_tokens=16))
    if not stream:  # a server that answers whole: the same spans from the completion's logprobs
        remote._request_body = _whole(remote._request_body)  # type: ignore[method-assign]
    result = remote.ocr(shot, prompt="text")
    assert (result.text, result.low_confidence) == (ANSWER, [[10, 15]])
    assert [round(p, 3) for _, p in result.pieces] == [round(p, 3) for _, p in here.pieces]


def _whole(make_body):
    def body(*args, **kwargs):
        made = make_body(*args, **kwargs)
        made.update(stream=False)
        made.pop("stream_options")
        return made
    return body
