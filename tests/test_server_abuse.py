"""dotocr-serve against a hostile local user and a careless network (issue 11), every attack made for real on
loopback: slow and idle connections, images that are cheap to send and dear to parse or hold, clients that
leave, inputs at the edge of the schema, browsers, and the CLI meeting a server that is not ours."""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from server_helpers import (
    HeldEngine,
    RecordingEngine,
    SlowEngine,
    chat_messages,
    png_bytes,
    running_server,
    tiny_settings,
    wait_until_ready,
)

from dotocr.cli.server_probe import probe_server
from dotocr.server import ServerLimits
from dotocr.server.connections import AcceptErrorLog
from dotocr.server.serving import start_background_server

pytestmark = pytest.mark.timeout(120)

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def engine(dots_tiny: Path) -> RecordingEngine:
    return RecordingEngine(tiny_settings(dots_tiny))


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def upload(url: str, data: bytes, name: str = "shot.png", timeout: float = 60, **kwargs) -> httpx.Response:
    return httpx.post(f"{url}/ocr", files={"file": (name, data, "image/png")}, timeout=timeout, **kwargs)


def answered_within(url: str, seconds: float) -> float:
    """Seconds until a normal upload gets 200 (retrying on 503 busy); fails past `seconds`."""
    started = time.monotonic()
    while True:
        response = upload(url, png_bytes())
        if response.status_code == 200:
            return time.monotonic() - started
        assert response.status_code == 503, response.text
        assert time.monotonic() - started < seconds, "a normal request was locked out"
        time.sleep(0.2)


def raw_connection(url: str, head: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port_of(url)), timeout=10)
    if head:
        sock.sendall(head)
    return sock


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes `sock` (after any answer it sends) within `within` seconds."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True
    return True


# -- 1. slow uploads ------------------------------------------------------------------------------------

def test_slow_uploads_are_cut_off_and_lock_nobody_out(engine: RecordingEngine) -> None:
    """More trickling bodies than body slots: they get 408 after the grace time, others get through."""
    limits = ServerLimits(max_bodies=4, body_grace_s=1.0, max_waiting=2)
    with running_server(engine, limits=limits) as url:
        head = (b"POST /ocr HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                b"Content-Length: 100000\r\n\r\n")
        part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        slow = [raw_connection(url, head + part) for _ in range(9)]
        stop = threading.Event()

        def trickle() -> None:
            while not stop.wait(0.3):
                for sock in slow:
                    with contextlib.suppress(OSError):
                        sock.send(b"x")

        dripper = threading.Thread(target=trickle, daemon=True)
        dripper.start()
        try:
            assert answered_within(url, 6.0) < 6.0
            answers = []
            for sock in slow:
                sock.settimeout(5)
                answers.append(sock.recv(4096))
        finally:
            stop.set()
            dripper.join()
            for sock in slow:
                sock.close()
    timed_out = [a for a in answers if a.startswith(b"HTTP/1.1 408")]
    busy = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
    assert len(timed_out) == 4 and len(busy) == 5, answers  # 4 slots, the rest refused at once
    assert b"too slowly" in timed_out[0]


# -- 2. idle connections, the connection cap, descriptors ---------------------------------------------

def test_idle_connections_are_closed_and_cannot_crowd_out_a_request(engine: RecordingEngine) -> None:
    limits = ServerLimits(max_connections=20, header_timeout_s=1.5)
    with running_server(engine, limits=limits) as url:
        idle = [raw_connection(url) for _ in range(60)]
        half = [raw_connection(url, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n") for _ in range(5)]
        try:
            started = time.monotonic()
            assert httpx.get(f"{url}/health", timeout=5).status_code == 200  # pushes out an idle one
            assert time.monotonic() - started < 2
            assert closed_by_server(half[0], 3.0), "headers that never end must not hold a connection"
            assert all(closed_by_server(sock, 3.0) for sock in idle)
            assert answered_within(url, 3.0) < 3.0
        finally:
            for sock in idle + half:
                sock.close()


@pytest.mark.timeout(180)
@pytest.mark.skipif(sys.platform == "win32", reason="Windows fact: there is no descriptor limit to lower (no "
                    "RLIMIT_NOFILE, and sockets are handles, not C descriptors)")
def test_a_flood_of_connections_under_a_low_descriptor_limit(dots_tiny: Path, tmp_path: Path) -> None:
    """dotocr-serve with 128 descriptors and 400 connections: /health stays reachable, the log stays short."""
    import resource

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))

    log_path = tmp_path / "serve.log"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    command = [sys.executable, "-m", "dotocr.server", "--port", str(free_port), "--model", str(dots_tiny),
               "--device", "cpu", "--precision", "fp32", "--header-timeout", "3"]
    with open(log_path, "wb") as log_file:
        server = subprocess.Popen(command, stderr=log_file, stdout=log_file, preexec_fn=low_limit)
    try:
        deadline = time.monotonic() + 60
        port = None
        while port is None:
            assert time.monotonic() < deadline and server.poll() is None, log_path.read_text()
            for line in log_path.read_text().splitlines():
                if "serving" in line and "http://127.0.0.1:" in line:
                    port = int(line.split("http://127.0.0.1:")[1].split()[0])
            time.sleep(0.1)
        url = f"http://127.0.0.1:{port}"
        flood = []
        for _ in range(400):
            with contextlib.suppress(OSError):
                flood.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        try:
            started = time.monotonic()
            while True:
                try:
                    assert httpx.get(f"{url}/health", timeout=2).status_code == 200
                    break
                except httpx.TransportError:
                    assert time.monotonic() - started < 5, "/health unreachable under the flood"
            assert time.monotonic() - started < 5
        finally:
            for sock in flood:
                sock.close()
        time.sleep(1)
        assert server.poll() is None
    finally:
        server.terminate()
        server.wait(30)
    text = log_path.read_text(errors="replace")
    assert text.count("Traceback") <= 1 and len(text) < 50_000, text[-3000:]


def test_running_out_of_descriptors_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """asyncio reports every failed accept; the handler turns a thousand into one line."""
    import asyncio
    import errno

    handler = AcceptErrorLog(every_s=60)
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.ERROR, logger="dotocr.server"):
            for _ in range(1000):
                handler(loop, {"message": "socket.accept() out of system resource",
                               "exception": OSError(errno.EMFILE, "Too many open files")})
    finally:
        loop.close()
    assert len([r for r in caplog.records if "descriptors" in r.getMessage()]) == 1
    assert handler.suppressed == 999


# -- 3. parsing off the event loop --------------------------------------------------------------------

def marker_jpeg(markers: int) -> bytes:
    """A valid small JPEG with `markers` empty APP1 segments after its start: slow to parse, tiny to send."""
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "white").save(buffer, format="JPEG")
    data = buffer.getvalue()
    return data[:2] + b"\xff\xe1\x00\x02" * markers + data[2:]


def test_a_slow_image_header_does_not_freeze_the_server(engine: RecordingEngine) -> None:
    data = marker_jpeg(400_000)
    with running_server(engine, limits=ServerLimits(max_upload_bytes=4 * MIB)) as url, \
            concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(upload, url, data, "markers.jpg")
        time.sleep(0.3)
        worst = 0.0
        while not slow.done():
            started = time.monotonic()
            assert httpx.get(f"{url}/health", timeout=10).status_code == 200
            worst = max(worst, time.monotonic() - started)
            time.sleep(0.1)
        assert slow.result().status_code in (200, 400)
    assert worst < 1.0, f"/health waited {worst:.2f} s behind an image's header"


# -- 4 and 6. deadlines, gone clients, long prompts ------------------------------------------------------

def test_a_client_that_leaves_a_plain_request_stops_its_generation(dots_tiny: Path) -> None:
    engine = SlowEngine(tiny_settings(dots_tiny, max_new_tokens=40))
    with running_server(engine) as url:
        engine.delay = 0.25  # 40 pieces would take 10 s
        with pytest.raises(httpx.ReadTimeout):
            upload(url, png_bytes(), timeout=1.5)
        time.sleep(1.0)
        pieces = engine.pieces
        time.sleep(1.0)
        assert engine.pieces == pieces and pieces < 20, "the gone client's generation kept running"
        engine.delay = 0.0
        started = time.monotonic()
        assert upload(url, png_bytes()).status_code == 200
        assert time.monotonic() - started < 5


def test_a_prompt_over_the_token_cap_is_refused_before_prefill(engine: RecordingEngine) -> None:
    with running_server(engine, limits=ServerLimits(max_prompt_tokens=64)) as url:
        body = {"model": "m", "messages": chat_messages(png_bytes(), "read this " * 500)}
        response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["type"] == "prompt_too_long" and "64 allowed" in error["message"]
        short = {"model": "m", "messages": chat_messages(png_bytes(), "read this")}
        assert httpx.post(f"{url}/v1/chat/completions", json=short, timeout=60).status_code == 200


def test_a_waiting_request_whose_client_left_leaves_the_line_at_once(dots_tiny: Path) -> None:
    engine = HeldEngine(tiny_settings(dots_tiny))
    with running_server(engine, limits=ServerLimits(max_waiting=1)) as url, \
            concurrent.futures.ThreadPoolExecutor(2) as pool:
        running = pool.submit(upload, url, png_bytes())
        while engine.started == 0:
            time.sleep(0.01)
        with pytest.raises(httpx.ReadTimeout):
            upload(url, png_bytes(), timeout=1.0)  # waits in the one place in line, then leaves
        time.sleep(0.3)
        after = pool.submit(upload, url, png_bytes())
        time.sleep(0.7)
        assert not after.done(), after.result().text  # it got the freed place instead of a 503
        engine.release.set()
        assert running.result(timeout=30).status_code == 200
        assert after.result(timeout=30).status_code == 200
    assert engine.started == 2  # the one whose client left never ran


# -- 5. memory ----------------------------------------------------------------------------------------

def flat_png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, "white" if mode == "RGB" else 255).save(buffer, format="PNG")
    return buffer.getvalue()


def test_images_are_limited_by_decoded_memory(dots_tiny: Path) -> None:
    """Two big images are held at once and a third is refused; the capacity is chosen from the server's own
    count, with a quarter kept back for preparing the image being read."""
    from dotocr.server.state import decoded_cost

    engine = HeldEngine(tiny_settings(dots_tiny))
    cost = decoded_cost((1600, 1600), "RGB")  # about 30 MiB
    limits = ServerLimits(max_decoded_bytes=cost * 10 // 3, max_waiting=4, retry_after_s=2)  # 2.5 images held
    server = start_background_server(engine, 0, limits=limits)
    try:
        url = server.url
        wait_until_ready(url)
        budget = server._server.config.app.state.dotocr.budget  # what the server holds, to wait on, not to guess
        assert 2 * cost <= budget.holdable < 3 * cost
        huge = flat_png((4096, 4096), "L")  # a few KB on the wire, 150 MB by our count once decoded
        assert len(huge) < 100_000
        response = upload(url, huge, "huge.png")
        assert response.status_code == 400 and "once decoded" in response.json()["error"]["message"]
        big = flat_png((1600, 1600))
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            first = pool.submit(upload, url, big)
            second = pool.submit(upload, url, big)
            deadline = time.monotonic() + 60
            while not (engine.started == 1 and budget.used == 2 * cost):  # the first read, the second in line
                assert time.monotonic() < deadline, f"two images were never held ({budget.used} bytes)"
                time.sleep(0.01)
            third = upload(url, big)
            assert third.status_code == 503 and "memory" in third.json()["error"]["message"]
            assert third.headers["retry-after"] == "2"
            engine.release.set()
            assert first.result(timeout=60).status_code == 200, first.result().text
            assert second.result(timeout=60).status_code == 200, second.result().text
        assert upload(url, big).status_code == 200  # the reservations were given back
    finally:
        server.stop()


# -- 7. inputs that passed validation -------------------------------------------------------------------

def constant_int32_tiff() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 40), 100_000, dtype=np.int32), mode="I").save(buffer, format="TIFF")
    return buffer.getvalue()


def test_edge_inputs_get_an_answer_not_a_500(engine: RecordingEngine) -> None:
    with running_server(engine) as url:
        assert upload(url, constant_int32_tiff(), "flat.tif").status_code == 200
        chat = f"{url}/v1/chat/completions"
        image = png_bytes()
        cases = [
            ({"model": "m", "messages": chat_messages(image, "read \ud800 this")}, 422),
            ({"model": "\ud800", "messages": chat_messages(image)}, 422),
            ({"model": "m", "messages": chat_messages(image), "max_tokens": True}, 422),
            ({"model": "m", "messages": chat_messages(image), "stream": "yes"}, 422),
            ({"model": "m", "messages": chat_messages(image), "temperature": 1e-300}, 200),
        ]
        for body, status in cases:
            response = httpx.post(chat, content=json.dumps(body), timeout=60,
                                  headers={"content-type": "application/json"})
            assert response.status_code == status, (body.get("model"), response.text)
        big = '{"model": "m", "max_tokens": ' + "9" * 5000 + ', "messages": []}'
        response = httpx.post(chat, content=big, headers={"content-type": "application/json"}, timeout=60)
        assert response.status_code == 422 and response.json()["error"]["type"] == "invalid_request"


@pytest.mark.skipif(sys.platform == "win32", reason="Windows fact: a file name cannot hold a line break, so the "
                    "forged name this test needs cannot exist there")
def test_cli_batch_reads_the_file_after_an_odd_one(dots_tiny: Path, tmp_path: Path) -> None:
    (tmp_path / "a.tif").write_bytes(constant_int32_tiff())
    (tmp_path / "b\n==> forged <==.png").write_bytes(png_bytes())
    command = [sys.executable, "-m", "dotocr", "ocr", "--local", "--model", str(dots_tiny), "--device", "cpu",
               "--precision", "fp32", "--max-new-tokens", "2", str(tmp_path / "a.tif"),
               str(tmp_path / "b\n==> forged <==.png")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr
    headers = [line for line in done.stdout.splitlines() if line.startswith("==>")]
    assert len(headers) == 2 and "\\n" in headers[1] and "Traceback" not in done.stderr


# -- 8 and 9. the CLI trusts only our own server, and no proxy -------------------------------------------

class _FakeDotocr(BaseHTTPRequestHandler):
    """Answers /health like a dotocr server and records whatever it is sent."""

    seen: list[tuple[str, str, dict]] = []

    def do_GET(self) -> None:  # noqa: N802
        self.seen.append(("GET", self.path, dict(self.headers)))
        body = json.dumps({"service": "dotocr", "status": "ready", "model": "m", "engine_state": "ready",
                           "engine": "local", "version": "0", "proof": "0" * 64}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        self.seen.append(("POST", self.path, dict(self.headers)))
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def fake_server():
    _FakeDotocr.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeDotocr)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_the_cli_sends_nothing_to_a_server_that_cannot_prove_it_is_ours(dots_tiny: Path, tmp_path: Path,
                                                                      fake_server) -> None:
    port = fake_server.server_address[1]
    settings = Path(os.environ["DOTOCR_CONFIG"])
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(f'api_port = {port}\nremote_api_key = "key-for-another-server"\n')
    image = tmp_path / "a.png"
    image.write_bytes(png_bytes())
    env = {**os.environ, "DOTOCR_API_TOKEN": "local-token"}
    command = [sys.executable, "-m", "dotocr", "ocr", "--model", str(dots_tiny), "--device", "cpu",
               "--precision", "fp32", "--max-new-tokens", "2", str(image)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=100, env=env)
    assert done.returncode == 0, done.stderr
    assert "cannot prove it is yours" in done.stderr
    assert [method for method, _path, _headers in _FakeDotocr.seen] == ["GET"]  # the probe only
    sent = json.dumps(_FakeDotocr.seen)
    assert "local-token" not in sent and "key-for-another-server" not in sent


def test_our_own_server_proves_itself_and_another_secret_does_not(engine: RecordingEngine) -> None:
    with running_server(engine) as url:
        server = probe_server(port_of(url), timeout=5)
        assert server is not None and server.verified
        secret = Path(os.environ["DOTOCR_DATA_DIR"]) / "server-secret"
        if sys.platform != "win32":
            assert secret.stat().st_mode & 0o777 == 0o600
        secret.write_text("f" * 64)  # another user's secret, in effect
        server = probe_server(port_of(url), timeout=5)
        assert server is not None and not server.verified


def test_loopback_traffic_never_goes_through_a_proxy(engine: RecordingEngine, fake_server,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from dotocr.engine import RemoteEngine

    proxy = f"http://127.0.0.1:{fake_server.server_address[1]}"
    with running_server(engine, api_token="bearer-secret") as url:
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):  # from here on
            monkeypatch.setenv(name, proxy)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        remote = RemoteEngine(tiny_settings(Path("m"), engine="remote", remote_url=f"{url}/v1",
                                            remote_api_key="bearer-secret"))
        assert remote.ocr(png_bytes()).stop_reason in ("eos", "max_new_tokens")
        assert probe_server(port_of(url), timeout=5) is not None
    assert _FakeDotocr.seen == []


# -- 15. the smaller ones -----------------------------------------------------------------------------

def test_an_early_503_is_an_answer_not_a_reset(dots_tiny: Path) -> None:
    engine = HeldEngine(tiny_settings(dots_tiny))
    with running_server(engine, limits=ServerLimits(max_waiting=0, max_upload_bytes=4 * MIB)) as url, \
            concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(upload, url, png_bytes())
        while engine.started == 0:
            time.sleep(0.01)
        noise = Image.frombytes("RGB", (900, 900), os.urandom(900 * 900 * 3))
        buffer = io.BytesIO()
        noise.save(buffer, format="PNG", compress_level=0)
        for _ in range(5):
            response = upload(url, buffer.getvalue())
            assert response.status_code == 503 and response.json()["error"]["type"] == "busy"
        chat = {"model": "m", "messages": chat_messages(buffer.getvalue())}  # refused before it is decoded
        response = httpx.post(f"{url}/v1/chat/completions", json=chat, timeout=60)
        assert response.status_code == 503 and response.headers["connection"] == "close"
        engine.release.set()
        assert running.result(timeout=30).status_code == 200


def test_browser_borne_requests_are_refused(engine: RecordingEngine) -> None:
    with running_server(engine) as url:
        assert httpx.get(f"{url}/health", headers={"Host": "rebound.example:8765"}).status_code == 403
        response = upload(url, png_bytes(), headers={"Origin": "https://evil.example"})
        assert response.status_code == 403 and "web pages" in response.json()["error"]["message"]
        assert httpx.get(f"{url}/health", headers={"Origin": "null"}).status_code == 403
        assert httpx.get(f"{url}/health", headers={"Host": "localhost"}).status_code == 200
        own_origin = url.replace("http://", "http://")
        assert httpx.get(f"{url}/health", headers={"Origin": own_origin}).status_code == 200
        assert httpx.get(f"{url}/docs").status_code == 404  # off by default: it loads scripts from a CDN
        assert httpx.get(f"{url}/openapi.json").status_code == 200


def test_token_scheme_is_case_blind_and_query_tokens_stay_out_of_the_log(
        engine: RecordingEngine, caplog: pytest.LogCaptureFixture) -> None:
    with running_server(engine, api_token="s3cret") as url:
        assert httpx.get(f"{url}/v1/models", headers={"Authorization": "bearer s3cret"}).status_code == 200
        with caplog.at_level(logging.INFO, logger="uvicorn.access"):
            httpx.get(f"{url}/v1/models?api_key=query-secret", headers={"Authorization": "Bearer s3cret"})
            time.sleep(0.2)
    logged = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert logged and not any("query-secret" in line for line in logged)
