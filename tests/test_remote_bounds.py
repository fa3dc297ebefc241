"""The remote engine against a server that misbehaves on purpose (issue 18): nothing it sends is trusted to be
small, to end, or to make sense. A stand-in OpenAI server on loopback plays each part."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import pytest
from engine_contract import sample_image
from server_helpers import OpenAIStandIn, stand_in, tiny_settings

from dotocr.engine.remote import MAX_BODY_BYTES, MAX_LINE_BYTES, RemoteEngine
from dotocr.errors import RemoteEngineError

pytestmark = pytest.mark.timeout(60)

RUN_FOR_S = 30.0
"""No part plays longer than this, whatever the engine does: the stand-in itself stays bounded."""


class _Hostile(OpenAIStandIn):
    part = "endless"
    sent = 0
    """Pieces (or bytes) written by the last answer before the engine hung up."""

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["content-length"]))
        type(self).sent = 0
        getattr(self, "_" + self.part.replace("-", "_"))()

    def _stream(self, pieces) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        until = time.monotonic() + RUN_FOR_S
        try:
            for piece in pieces:
                if time.monotonic() > until:
                    return
                self.wfile.write(piece)
                type(self).sent += 1
        except (BrokenPipeError, ConnectionResetError):
            return

    def _endless(self) -> None:
        """Never finishes, each piece different (no loop to see): 10.3 M pieces in 60 s, 2.9 GB, once."""
        def pieces():
            n = 0
            while True:
                n += 1
                chunk = {"choices": [{"index": 0, "delta": {"content": f" w{n * 7919 % 100003}"}}]}
                yield f"data: {json.dumps(chunk)}\n\n".encode()
        self._stream(pieces())

    def _no_newline(self) -> None:
        """One SSE line that never ends: once buffered to 3.2 GB."""
        def pieces():
            yield b"data: {\"choices\": [{\"delta\": {\"content\": \""
            while True:
                yield b"a" * 65536
        self._stream(pieces())

    def _huge_json(self) -> None:
        """A non-streamed answer of 3 GiB, once read whole."""
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(3 << 30))
        self.end_headers()
        self._stream(iter(lambda: b" " * 65536, None))

    def _trickle(self) -> None:
        """A byte every 0.2 s, forever: every read is quick, the answer never comes."""
        def pieces():
            while True:
                time.sleep(0.2)
                yield b":"
        self._stream(pieces())

    def _choices_five(self) -> None:
        self._stream([b'data: {"choices": 5}\n\n', b"data: [DONE]\n\n"])

    def _surrogates(self) -> None:
        chunks = [{"choices": [{"delta": {"content": "a\\ud800b"}}]}, {"choices": [{"finish_reason": "stop"}]}]
        self._stream([f"data: {json.dumps(c)}\n\n".replace("\\\\ud800", "\\ud800").encode() for c in chunks])

    def _gzipped(self) -> None:
        self._send(200, gzip.compress(b" " * (64 << 20)), content_encoding="gzip")


@pytest.fixture
def hostile():
    with stand_in(_Hostile) as url:
        yield url + "/v1"


def engine(url: str, **kwargs) -> RemoteEngine:
    return RemoteEngine(tiny_settings(Path("unused"), engine="remote", remote_url=url, max_new_tokens=64), **kwargs)


def one_sentence(error: BaseException, *words: str) -> str:
    message = str(error)
    assert message.endswith(".") and "\n" not in message and len(message) < 300, message
    for word in words:
        assert word in message, message
    return message


def test_an_endless_stream_is_cut_at_max_new_tokens_here(hostile: str) -> None:
    _Hostile.part = "endless"
    started = time.monotonic()
    result = engine(hostile).ocr(sample_image(), max_new_tokens=50)
    assert time.monotonic() - started < 15
    assert result.stop_reason == "max_new_tokens" and result.generated_tokens == 50
    assert result.raw.count(" w") == 50


@pytest.mark.parametrize(("part", "words"), [
    ("no-newline", ("line longer than", f"{MAX_LINE_BYTES // 2**20} MiB")),
    ("huge-json", ("sent more than",)),
    ("choices-five", ("not a chat completion chunk",)),
    ("gzipped", ("gzip-compressed",)),
])
def test_what_no_server_should_send_is_one_sentence_within_its_limit(hostile: str, part: str, words) -> None:
    _Hostile.part = part
    started = time.monotonic()
    with pytest.raises(RemoteEngineError) as caught:
        engine(hostile).ocr(sample_image(), max_new_tokens=64)
    assert time.monotonic() - started < 15
    one_sentence(caught.value, hostile, *words)
    if part in ("no-newline", "huge-json"):
        assert _Hostile.sent * 65536 < 4 * max(MAX_LINE_BYTES, MAX_BODY_BYTES)  # it stopped reading early


def test_a_trickle_that_never_ends_is_given_up_at_the_answer_deadline(hostile: str) -> None:
    _Hostile.part = "trickle"
    started = time.monotonic()
    with pytest.raises(RemoteEngineError) as caught:
        engine(hostile, answer_timeout_s=2).ocr(sample_image())
    assert time.monotonic() - started < 10
    one_sentence(caught.value, "did not finish its answer within 2 s")


def test_lone_surrogates_from_a_server_become_replacement_characters(hostile: str) -> None:
    _Hostile.part = "surrogates"
    result = engine(hostile).ocr(sample_image(), prompt="layout-json")
    assert result.raw == "a\ufffdb"
    json.dumps(result.to_json_dict(), ensure_ascii=False).encode("utf-8")
