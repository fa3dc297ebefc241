"""RemoteEngine against a real dotocr-serve on loopback: the engine contract, then what only a network adds.

The server runs the real local engine on the tiny checkpoint, so the remote answer can be compared with
the local one token for token.
"""

from __future__ import annotations

import functools
import http.server
import threading
import time
from pathlib import Path

import pytest
from engine_contract import EngineContract, sample_image
from server_helpers import HeldLoadEngine, SlowEngine, running_server, tiny_settings

from dotocr.config import Settings
from dotocr.engine import DotOCRInference, make_engine
from dotocr.engine.remote import RemoteEngine
from dotocr.errors import RemoteEngineError
from dotocr.server import ServerLimits

pytestmark = pytest.mark.timeout(180)


def remote_settings(url: str, **changes) -> Settings:
    return Settings(engine="remote", remote_url=f"{url}/v1", max_new_tokens=16).replace(**changes)


@pytest.fixture(scope="module")
def local(dots_tiny: Path) -> DotOCRInference:
    """The engine behind the server; called directly it is the local reference."""
    return DotOCRInference(tiny_settings(dots_tiny, max_image_size=1024, max_new_tokens=16))


@pytest.fixture(scope="module")
def server_url(local: DotOCRInference):
    with running_server(local) as url:
        yield url


@pytest.fixture(scope="module")
def engine(server_url: str) -> RemoteEngine:
    remote = make_engine(remote_settings(server_url))
    assert isinstance(remote, RemoteEngine)
    remote.load()
    return remote


class TestRemoteEngine(EngineContract):
    """The same contract the local engine passes (tests/engine_contract.py)."""


# -- the same answers as the local engine ---------------------------------------------------------------

@pytest.mark.parametrize("prompt", ["text", "layout-json", "grounding"])
def test_remote_answer_equals_the_local_answer(engine: RemoteEngine, local: DotOCRInference,
                                               prompt: str) -> None:
    image = sample_image(333, 77, "Remote")
    bbox = (20, 10, 200, 60) if prompt == "grounding" else None
    remote = engine.ocr(image, prompt=prompt, bbox=bbox, max_new_tokens=8)
    here = local.ocr(image, prompt=prompt, bbox=bbox, max_new_tokens=8)
    assert remote.raw == here.raw and remote.text == here.text and remote.cells == here.cells
    assert (remote.image_tokens, remote.prompt_tokens, remote.generated_tokens) == (
        here.image_tokens, here.prompt_tokens, here.generated_tokens)
    assert remote.stop_reason == here.stop_reason
    assert (remote.device, remote.precision) == ("remote cpu", "fp32")


def test_on_text_receives_the_answer_as_it_streams(engine: RemoteEngine) -> None:
    pieces: list[str] = []
    result = engine.ocr(sample_image(), max_new_tokens=8, on_text=pieces.append)
    assert len(pieces) >= 2 and "".join(pieces) == result.raw


def test_states_follow_the_connection(server_url: str) -> None:
    states: list[str] = []
    remote = RemoteEngine(remote_settings(server_url), on_state=lambda s: states.append(s.status))
    assert remote.state.status == "unloaded" and remote.device is None
    remote.ocr(sample_image(), max_new_tokens=2)
    assert states == ["loading", "ready", "busy", "ready"]
    assert remote.device == "remote cpu" and remote.precision == "fp32"
    remote.unload()
    assert remote.state.status == "unloaded" and remote.device is None
    assert remote.ocr(sample_image(), max_new_tokens=2).generated_tokens >= 1  # connects again


def test_reconfigure_to_another_server_disconnects(server_url: str) -> None:
    remote = RemoteEngine(remote_settings(server_url))
    remote.load()
    remote.reconfigure(remote.settings.replace(max_new_tokens=3))
    assert remote.state.status == "ready"
    remote.reconfigure(remote.settings.replace(remote_url="http://127.0.0.1:9/v1"))
    assert remote.state.status == "unloaded"
    with pytest.raises(RemoteEngineError, match="Cannot reach"):
        remote.load()


# -- what the network adds ---------------------------------------------------------------------------------

def one_sentence(error: BaseException) -> str:
    message = str(error)
    assert message.endswith(".") and "\n" not in message and "Traceback" not in message
    return message


def test_server_not_running_is_one_clear_sentence() -> None:
    remote = RemoteEngine(Settings(engine="remote", remote_url="http://127.0.0.1:9/v1"))
    started = time.monotonic()
    with pytest.raises(RemoteEngineError) as caught:
        remote.ocr(sample_image(), max_new_tokens=2)
    assert time.monotonic() - started < 15
    message = one_sentence(caught.value)
    assert "Cannot reach the OCR server at http://127.0.0.1:9/v1" in message and "remote_url" in message
    assert remote.state.status == "error"


def test_url_without_v1_finds_the_api_under_v1(server_url: str) -> None:
    """Ollama's address is http://127.0.0.1:11434 with the OpenAI API under /v1; any server's is found so."""
    remote = RemoteEngine(Settings(engine="remote", remote_url=server_url, max_new_tokens=2))
    assert remote.ocr(sample_image(), max_new_tokens=2).generated_tokens >= 1
    assert remote.server_kind == "dotocr" and (remote.device, remote.precision) == ("remote cpu", "fp32")


def test_a_server_that_is_not_openai_compatible_is_one_sentence(tmp_path: Path) -> None:
    """A plain web server (python -m http.server) on loopback: no model list anywhere."""
    (tmp_path / "index.html").write_text("<h1>hello</h1>", encoding="utf-8")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as web:
        threading.Thread(target=web.serve_forever, daemon=True).start()
        try:
            for url in (f"http://127.0.0.1:{web.server_port}", f"http://127.0.0.1:{web.server_port}/v1"):
                with pytest.raises(RemoteEngineError) as caught:
                    RemoteEngine(Settings(engine="remote", remote_url=url)).load()
                message = one_sentence(caught.value)
                assert "is not an OpenAI-compatible API" in message and "llama-server" in message
        finally:
            web.shutdown()


def test_not_a_url_is_explained() -> None:
    with pytest.raises(RemoteEngineError) as caught:
        RemoteEngine(Settings(engine="remote", remote_url="localhost-8000")).load()
    assert "not a usable URL" in one_sentence(caught.value)


@pytest.mark.timeout(120)
def test_api_key_is_sent_and_a_wrong_one_explained(local: DotOCRInference) -> None:
    with running_server(local, api_token="s3cret") as url:
        good = RemoteEngine(remote_settings(url, remote_api_key="s3cret"))
        assert good.ocr(sample_image(), max_new_tokens=2).generated_tokens >= 1
        with pytest.raises(RemoteEngineError) as caught:
            RemoteEngine(remote_settings(url, remote_api_key="wrong")).load()
        message = one_sentence(caught.value)
        assert "HTTP 401" in message and "remote_api_key" in message


@pytest.mark.timeout(120)
def test_waits_while_the_server_loads(dots_tiny: Path) -> None:
    server_engine = HeldLoadEngine(tiny_settings(dots_tiny))
    with running_server(server_engine, wait=False, limits=ServerLimits(retry_after_s=1)) as url:
        remote = RemoteEngine(remote_settings(url), busy_retry_s=60)
        threading.Timer(1.0, server_engine.release.set).start()
        result = remote.ocr(sample_image(), max_new_tokens=2)
        assert result.generated_tokens >= 1


@pytest.mark.timeout(120)
def test_server_error_sentence_is_passed_on(tmp_path: Path, dots_tiny: Path) -> None:
    broken = DotOCRInference(tiny_settings(dots_tiny, model=str(tmp_path / "no-such-model")))
    with running_server(broken) as url:
        remote = RemoteEngine(remote_settings(url), busy_retry_s=0.5)
        with pytest.raises(RemoteEngineError) as caught:
            remote.ocr(sample_image(), max_new_tokens=2)
        message = str(caught.value)
        assert "HTTP 503" in message and "no-such-model" in message and "\n" not in message


@pytest.mark.timeout(120)
def test_a_server_that_stops_answering_times_out(dots_tiny: Path) -> None:
    slow = SlowEngine(tiny_settings(dots_tiny, max_new_tokens=8))
    with running_server(slow) as url:
        slow.delay = 2.0
        remote = RemoteEngine(remote_settings(url), read_timeout_s=0.5)
        started = time.monotonic()
        with pytest.raises(RemoteEngineError) as caught:
            remote.ocr(sample_image(), max_new_tokens=8)
        assert time.monotonic() - started < 10
        assert "did not answer in time" in one_sentence(caught.value)
        slow.delay = 0.0
