"""The remote engine's low-confidence spans from a server's logprobs (issue 17): asked for, read streamed and whole,
bounded, and never a false "sure" when the server sends none or sends nonsense. A stand-in OpenAI server on
loopback plays each answer; llama-server and dotocr-serve are checked for real in test_llama_server.py and
test_server_logprobs.py."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
from engine_contract import sample_image
from server_helpers import OpenAIStandIn, stand_in, tiny_settings

from dotocr.engine.remote import RemoteEngine
from dotocr.errors import RemoteEngineError

pytestmark = pytest.mark.timeout(60)

SURE, UNSURE = math.log(0.97), math.log(0.3)


def entry(token: str, logprob: float, *, spelled: list[int] | None = None) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode()) if spelled is None else spelled,
            "top_logprobs": []}


class _Scripted(OpenAIStandIn):
    """Answers each chat request with `answer(body)`: (status, chunks or a whole body)."""

    answer: Any = None
    requests: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        type(self).requests.append(body)
        status, reply = type(self).answer(body)
        if isinstance(reply, dict):
            self._send(status, json.dumps(reply).encode())
            return
        self.send_response(status)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        until = time.monotonic() + 30
        try:
            for chunk in reply:
                if time.monotonic() > until:
                    return
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError):
            return


@pytest.fixture
def scripted():
    _Scripted.requests = []
    with stand_in(_Scripted) as url:
        yield url + "/v1"


def engine(url: str) -> RemoteEngine:
    return RemoteEngine(tiny_settings(Path("unused"), engine="remote", remote_url=url, max_new_tokens=64))


def streamed(*chunks: tuple[str, list[dict[str, Any]] | Any]) -> list[dict[str, Any]]:
    """Chunks of (content, logprobs content), then the finish."""
    events = [{"choices": [{"index": 0, "delta": {"content": text}, "logprobs": {"content": lp}}]}
              for text, lp in chunks]
    return [*events, {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]


def test_streamed_logprobs_become_spans_and_a_split_character_is_decoded_from_its_bytes(scripted):
    e_acute = list("é".encode())  # two bytes, sent as two tokens: the first adds nothing yet
    _Scripted.answer = lambda _body: (200, streamed(
        ("Caf", [entry("Caf", SURE)]),
        ("é", [entry("\ufffd", SURE, spelled=e_acute[:1]), entry("\ufffd", UNSURE, spelled=e_acute[1:])]),
        (" au", [entry(" au", UNSURE)]), (" lait", [entry(" lait", SURE)])))
    result = engine(scripted).ocr(sample_image(), prompt="text")
    assert _Scripted.requests[-1]["logprobs"] is True and _Scripted.requests[-1]["stream"] is True
    assert result.text == "Café au lait"
    assert [text for text, _ in result.pieces] == ["Caf", "", "é", " au", " lait"]
    assert result.low_confidence == [[3, 7]]  # "é" and "au", touching across the space: one span


def test_a_whole_answer_carries_its_logprobs_in_the_choice(scripted):
    message = {"role": "assistant", "content": "Total 42"}
    logprobs = {"content": [entry("Total", SURE), entry(" 4", UNSURE), entry("2", SURE)]}
    _Scripted.answer = lambda _body: (200, {"choices": [{"index": 0, "message": message, "logprobs": logprobs,
                                                         "finish_reason": "stop"}]})
    result = engine(scripted).ocr(sample_image(), prompt="text")
    assert (result.text, result.low_confidence) == ("Total 42", [[6, 7]])


@pytest.mark.parametrize("logprobs", [
    None,  # the server sends none
    {"content": 5},
    {"content": [{"token": "Hello", "logprob": "sure"}]},
    {"content": [{"token": "Hello", "logprob": True}]},
    {"content": ["Hello"]},
    {"content": [{"token": "Hello", "logprob": float("nan")}]},
    {"content": [{"logprob": -0.1, "bytes": [300]}]},
    {"content": [entry("Goodbye", UNSURE)]},  # logprobs for other text
    [1, 2],
])
def test_no_or_malformed_logprobs_leave_the_spans_unknown_not_sure(scripted, logprobs):
    first = {"delta": {"content": "Hello"}, **({} if logprobs is None else {"logprobs": logprobs})}
    finish = {"choices": [{"delta": {}, "finish_reason": "stop"}]}
    _Scripted.answer = lambda _body: (200, [{"choices": [first]}, finish])
    result = engine(scripted).ocr(sample_image(), prompt="text")
    assert result.text == "Hello"
    assert result.low_confidence is None and "low_confidence" not in result.to_json_dict()


def test_a_server_that_refuses_the_field_is_asked_again_without_it(scripted):
    def answer(body):
        if "logprobs" in body:
            return 400, {"error": {"message": "logprobs is not supported by this server", "type": "invalid"}}
        return 200, streamed(("Hello", None))
    _Scripted.answer = answer
    remote = engine(scripted)
    first = remote.ocr(sample_image(), prompt="text")
    second = remote.ocr(sample_image(), prompt="text")
    assert first.text == second.text == "Hello" and first.low_confidence is None
    assert ["logprobs" in r for r in _Scripted.requests] == [True, False, False]  # asked once, then left out


def test_another_refusal_is_still_one_sentence_and_not_retried(scripted):
    _Scripted.answer = lambda _body: (400, {"error": {"message": "temperature must be at most 2"}})
    with pytest.raises(RemoteEngineError) as caught:
        engine(scripted).ocr(sample_image(), prompt="text")
    message = str(caught.value)
    assert "temperature must be at most 2" in message and message.endswith(".") and "\n" not in message
    assert len(_Scripted.requests) == 1


def test_endless_logprobs_are_cut_with_the_answer(scripted):
    def chunks():
        n = 0
        while True:
            n += 1
            word = f" w{n}"
            yield {"choices": [{"delta": {"content": word},
                                "logprobs": {"content": [entry(word, UNSURE if n == 3 else SURE)] * 3}}]}
    _Scripted.answer = lambda _body: (200, chunks())
    started = time.monotonic()
    result = engine(scripted).ocr(sample_image(), prompt="text", max_new_tokens=50)
    assert time.monotonic() - started < 15
    assert result.stop_reason == "max_new_tokens" and result.raw.count(" w") == 50
    # three entries a piece: more logprobs than tokens asked for, so they cannot be the text's and are dropped
    assert result.low_confidence is None and result.pieces == []


def test_logprobs_past_the_tokens_asked_for_are_not_kept(scripted):
    def chunks():
        for n in range(1, 1000):
            word = f" w{n}"
            yield {"choices": [{"delta": {"content": word},
                                "logprobs": {"content": [entry(word, UNSURE if n == 3 else SURE)]}}]}
    _Scripted.answer = lambda _body: (200, chunks())
    result = engine(scripted).ocr(sample_image(), prompt="text", max_new_tokens=50)
    assert result.stop_reason == "max_new_tokens" and len(result.pieces) == 50
    assert result.text[slice(*result.low_confidence[0])] == "w3"
