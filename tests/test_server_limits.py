"""dotocr-serve's limits, each provoked for real: size, bad images, the queue, the deadline, the token."""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from engine_contract import bomb_png
from PIL import Image
from server_helpers import (
    HeldEngine,
    RecordingEngine,
    SlowEngine,
    chat_messages,
    data_url,
    png_bytes,
    running_server,
    tiny_settings,
)

from dotocr.server import ServerLimits, ServerStartError, start_background_server

pytestmark = pytest.mark.timeout(180)

MIB = 1024 * 1024
SMALL = ServerLimits(max_upload_bytes=1 * MIB, max_waiting=2, retry_after_s=7)


@pytest.fixture(scope="module")
def engine(dots_tiny: Path) -> RecordingEngine:
    return RecordingEngine(tiny_settings(dots_tiny))


@pytest.fixture(scope="module")
def url(engine: RecordingEngine):
    with running_server(engine, limits=SMALL) as base:
        yield base


def noise_png(megabytes: float) -> bytes:
    """A PNG that does not compress: about `megabytes` MiB on disk."""
    side = int((megabytes * MIB / 3) ** 0.5) + 1
    buffer = io.BytesIO()
    noise = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    noise.save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


def upload(url: str, data: bytes, name: str = "shot.png", **kwargs) -> httpx.Response:
    return httpx.post(f"{url}/ocr", files={"file": (name, data, "image/png")}, timeout=60, **kwargs)


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == status and "Traceback" not in error["message"]
    return error


# -- size ----------------------------------------------------------------------------------------------

def test_upload_over_the_limit_is_413(url: str, engine: RecordingEngine) -> None:
    calls = len(engine.calls)
    error = error_of(upload(url, noise_png(1.5)), 413)
    assert "larger than this server accepts" in error["message"]
    assert len(engine.calls) == calls  # never reached the model


def test_upload_just_under_the_limit_is_read(url: str) -> None:
    data = noise_png(0.9)
    assert len(data) < MIB
    response = upload(url, data)
    assert response.status_code == 200, response.text


def test_chunked_upload_is_cut_off_while_streaming(url: str) -> None:
    """No Content-Length: the server counts while reading and stops long before the sender is done."""
    sent = 0
    total = 64 * MIB

    def body():
        nonlocal sent
        yield (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.png\"\r\n"
               b"Content-Type: image/png\r\n\r\n")
        chunk = b"\0" * (64 * 1024)
        while sent < total:
            sent += len(chunk)
            yield chunk
        yield b"\r\n--b--\r\n"

    try:
        response = httpx.post(f"{url}/ocr", content=body(), timeout=60,
                              headers={"content-type": "multipart/form-data; boundary=b"})
    except httpx.TransportError:
        response = None  # the server closed the connection on us: also a refusal
    assert sent < total / 2, "the server kept reading an over-limit body"
    if response is not None:
        error_of(response, 413)


def test_chat_image_over_the_limit_is_413(url: str) -> None:
    body = {"model": "m", "messages": chat_messages(noise_png(1.2))}
    error_of(httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60), 413)


def test_other_routes_take_no_big_bodies(url: str) -> None:
    error_of(httpx.post(f"{url}/v1/models", content=b"x" * 200_000, timeout=30), 413)


# -- not images -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("data", "status", "words"), [
    (b"hello, I am text", 415, "not an image"),
    (b"", 400, "empty"),
    (png_bytes((300, 300))[:400], 400, "truncated"),
    (bomb_png(), 400, "larger than"),
    (bomb_png(0, 0), 400, "0 x 0 pixels"),
], ids=["text", "empty", "truncated", "bomb-header", "zero-size"])
def test_bad_images_are_refused_with_their_name(url: str, engine: RecordingEngine, data: bytes, status: int,
                                                words: str) -> None:
    calls = len(engine.calls)
    error = error_of(upload(url, data, name="bad.png"), status)
    assert words in error["message"].lower() and "'bad.png'" in error["message"]
    assert len(engine.calls) == calls


def test_a_real_decompression_bomb_is_400(url: str) -> None:
    """A well-formed 1-bit PNG of 100 megapixels: tiny on the wire, huge once decoded."""
    buffer = io.BytesIO()
    Image.new("1", (10_000, 10_000), 1).save(buffer, format="PNG")
    assert len(buffer.getvalue()) < MIB
    assert "larger than" in error_of(upload(url, buffer.getvalue()), 400)["message"].lower()


def test_body_that_is_not_multipart_is_415(url: str) -> None:
    response = httpx.post(f"{url}/ocr", content=png_bytes(), headers={"content-type": "image/png"})
    assert "multipart/form-data" in error_of(response, 415)["message"]


def test_multipart_cut_short_is_400(url: str) -> None:
    body = b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\n" + png_bytes()
    response = httpx.post(f"{url}/ocr", content=body,
                          headers={"content-type": "multipart/form-data; boundary=b"})
    assert "cut off" in error_of(response, 400)["message"]


# -- nothing from a request reaches the file system --------------------------------------------------------

_opened_for_writing: list[tuple] = []
_watching = threading.Event()
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND


def _audit(event: str, args: tuple) -> None:
    """Python's own audit hook sees every file opened in this process (the server runs in it too)."""
    if event == "open" and _watching.is_set():
        path, mode, flags = args
        if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & _WRITE_FLAGS:
            _opened_for_writing.append((path, mode, flags))


sys.addaudithook(_audit)  # cannot be removed; it records nothing unless a test sets _watching


@pytest.mark.timeout(120)
def test_uploads_never_touch_the_file_system(engine: RecordingEngine) -> None:
    """Starlette spools uploads over 1 MiB to a temporary file (the hook sees that); ours stay in memory."""
    data = noise_png(3)
    chat = {"model": "m", "messages": chat_messages(png_bytes())}
    with running_server(engine, limits=ServerLimits(max_upload_bytes=4 * MIB)) as base:
        _opened_for_writing.clear()
        _watching.set()
        try:
            response = upload(base, data, name="../../upload-here.png")
            chat_response = httpx.post(f"{base}/v1/chat/completions", json=chat, timeout=60)
        finally:
            _watching.clear()
    assert response.status_code == 200, response.text
    assert chat_response.status_code == 200, chat_response.text
    assert _opened_for_writing == []


# -- one generation at a time, a bounded queue --------------------------------------------------------------

@pytest.mark.timeout(240)
def test_twenty_concurrent_requests_are_answered_or_refused(dots_tiny: Path) -> None:
    engine = HeldEngine(tiny_settings(dots_tiny))
    limits = ServerLimits(max_waiting=4, retry_after_s=3)
    with running_server(engine, limits=limits) as base:
        image = png_bytes()
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            def send(i: int) -> httpx.Response:
                if i % 2:
                    return httpx.post(f"{base}/v1/chat/completions", timeout=120,
                                      json={"model": "m", "messages": chat_messages(image)})
                return httpx.post(f"{base}/ocr", files={"file": ("a.png", image, "image/png")}, timeout=120)

            futures = [pool.submit(send, i) for i in range(20)]
            refused = []
            deadline = time.monotonic() + 60
            while len(refused) < 15 and time.monotonic() < deadline:  # the refusals come at once
                refused = [f for f in futures if f.done()]
                time.sleep(0.05)
            assert len(refused) == 15, "the refusals should not wait for the running generation"
            assert engine.started == 1  # one generation at a time
            engine.release.set()
            responses = [f.result(timeout=120) for f in futures]
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 5 + [503] * 15
    for response in responses:
        if response.status_code == 503:
            assert response.headers["retry-after"] == "3"
            assert error_of(response, 503)["type"] == "busy"


# -- the deadline -------------------------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_slow_request_gets_504_and_its_generation_stops(dots_tiny: Path) -> None:
    engine = SlowEngine(tiny_settings(dots_tiny, max_new_tokens=40))
    limits = ServerLimits(request_timeout_s=1.5)
    with running_server(engine, limits=limits) as base:
        engine.delay = 0.25  # 40 pieces would take 10 s
        started = time.monotonic()
        response = upload(base, png_bytes())
        assert time.monotonic() - started < 5
        assert "limit of 1.5 s" in error_of(response, 504)["message"]
        time.sleep(1.0)
        pieces = engine.pieces
        time.sleep(1.0)
        assert engine.pieces == pieces, "the timed-out generation kept running"
        assert pieces < 20
        engine.delay = 0.0
        assert upload(base, png_bytes()).status_code == 200  # the model is free again


@pytest.mark.timeout(120)
def test_deadline_also_counts_while_waiting_in_line(dots_tiny: Path) -> None:
    engine = HeldEngine(tiny_settings(dots_tiny))
    with running_server(engine, limits=ServerLimits(request_timeout_s=1.0)) as base:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            running = pool.submit(upload, base, png_bytes())
            while engine.started == 0:
                time.sleep(0.01)
            waiting = pool.submit(upload, base, png_bytes())
            error_of(waiting.result(timeout=30), 504)
            error_of(running.result(timeout=30), 504)
        assert engine.started == 1  # the waiter left the line without running
        engine.release.set()
        assert upload(base, png_bytes()).status_code == 200
        assert engine.started == 2


@pytest.mark.timeout(120)
def test_a_client_that_leaves_a_stream_stops_its_generation(dots_tiny: Path) -> None:
    engine = SlowEngine(tiny_settings(dots_tiny, max_new_tokens=40))
    with running_server(engine) as base:
        engine.delay = 0.25
        body = {"model": "m", "messages": chat_messages(png_bytes()), "stream": True}
        with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=60) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("data: ")  # the role chunk
            next(line for line in lines if '"content"' in line)  # one piece of text
        time.sleep(1.5)
        pieces = engine.pieces
        time.sleep(1.0)
        assert engine.pieces == pieces and pieces < 20
        engine.delay = 0.0
        assert upload(base, png_bytes()).status_code == 200


# -- the API token -------------------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_token_is_required_on_every_route_but_health(engine: RecordingEngine) -> None:
    with running_server(engine, api_token="s3cret") as base:
        assert httpx.get(f"{base}/health").status_code == 200
        for method, path in (("POST", "/ocr"), ("GET", "/v1/models"), ("POST", "/v1/chat/completions"),
                             ("GET", "/docs"), ("GET", "/openapi.json")):
            response = httpx.request(method, f"{base}{path}")
            assert "needs an API token" in error_of(response, 401)["message"]
            assert response.headers["www-authenticate"] == "Bearer"
            wrong = httpx.request(method, f"{base}{path}", headers={"Authorization": "Bearer nope"})
            assert error_of(wrong, 401)["message"] == "The API token is wrong."
        good = {"Authorization": "Bearer s3cret"}
        assert httpx.get(f"{base}/v1/models", headers=good).status_code == 200
        response = httpx.post(f"{base}/ocr", headers=good, timeout=60,
                              files={"file": ("a.png", png_bytes(), "image/png")})
        assert response.status_code == 200, response.text


def test_token_check_comes_before_reading_a_big_body(engine: RecordingEngine) -> None:
    with running_server(engine, api_token="s3cret", limits=SMALL) as base:
        error_of(upload(base, noise_png(1.5)), 401)


def test_background_server_refuses_a_network_address_without_token(engine: RecordingEngine) -> None:
    with pytest.raises(ServerStartError, match="API token"):
        start_background_server(engine, 0, host="0.0.0.0")


@pytest.mark.timeout(120)
def test_network_address_with_token_still_checks_it(engine: RecordingEngine) -> None:
    server = start_background_server(engine, 0, host="0.0.0.0", api_token="s3cret")
    try:
        local = f"http://127.0.0.1:{server.port}"
        assert error_of(httpx.get(f"{local}/v1/models"), 401)
        assert httpx.get(f"{local}/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    finally:
        server.stop()


def test_port_in_use_is_one_sentence(engine: RecordingEngine) -> None:
    server = start_background_server(engine, 0, load_on_start=False)
    try:
        with pytest.raises(ServerStartError, match=f"Cannot listen on 127.0.0.1:{server.port}.*--port"):
            start_background_server(engine, server.port)
    finally:
        server.stop()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("port", ["70000", "0", "-1", "http"])
def test_dotocr_serve_refuses_a_port_that_is_not_one(port: str) -> None:
    done = subprocess.run([sys.executable, "-m", "dotocr.server", "--port", port], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "--port" in done.stderr and "Traceback" not in done.stderr


def test_dotocr_serve_refuses_a_network_address_without_token(dots_tiny: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DOTOCR_API_TOKEN"}
    command = [sys.executable, "-m", "dotocr.server", "--host", "0.0.0.0", "--model", str(dots_tiny)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=100, env=env)
    assert done.returncode == 2
    assert "--api-token" in done.stderr and "network" in done.stderr
    assert "Traceback" not in done.stderr


def test_data_url_limit_is_checked_before_decoding(url: str) -> None:
    """A data URL over the limit is refused from its length alone (not decoded into memory first)."""
    body = {"model": "m", "messages": chat_messages(b"")}
    body["messages"][0]["content"][0]["image_url"]["url"] = data_url(b"\0" * (MIB + 1024))
    error_of(httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60), 413)


def test_a_deadline_timer_that_fires_early_still_times_the_request_out(monkeypatch) -> None:
    """asyncio runs a timer up to its clock's resolution early: 15.6 ms on Windows, where `time.monotonic` is
    GetTickCount64. The Windows lane found timed-out requests answered 499 (client gone) instead of 504, as the
    clock still said "not yet" when the deadline's own timer had fired. Here the clock stands still."""
    from dotocr.server import gate as gate_module
    from dotocr.server.gate import GateTimeout, GenerationGate

    now = time.monotonic()
    monkeypatch.setattr(gate_module, "time", SimpleNamespace(monotonic=lambda: now))  # the gate's clock only
    generation = GenerationGate(max_waiting=1)
    ticket = generation.admit(0.05)
    release = threading.Event()

    async def main() -> None:
        with pytest.raises(GateTimeout):
            await asyncio.wait_for(ticket.run(lambda: release.wait(10)), 5)  # the deadline timer fires, at once

    try:
        asyncio.run(main())
        assert gate_module.time.monotonic() < ticket.deadline  # the clock says "not yet", as a coarse one can
        assert ticket.expired and ticket.should_stop()
    finally:
        release.set()
        ticket.close()
        generation.close()
