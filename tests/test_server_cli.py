"""`dotocr-serve` as a person runs it: a subprocess, driven with the README's curl command as written."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server_helpers import png_bytes

from tests.cli_helpers import NEW_GROUP, interrupt

pytestmark = pytest.mark.timeout(240)

REPO = Path(__file__).resolve().parents[1]
needs_curl = pytest.mark.skipif(sys.platform == "win32" and shutil.which("curl") is None,
                                reason="Wine has no curl.exe (Windows 10 and 11 ship one in System32); "
                                       "tests/test_windows_e2e.py runs curl from Linux against dotocr-serve under Wine")


def readme_curl() -> str:
    """The curl command in README.md, word for word (the test only swaps in a free port)."""
    lines = [line.strip() for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines()
             if re.match(r"^curl .*http://127\.0\.0\.1:8765/ocr$", line.strip())]
    assert len(lines) == 1, f"expected one curl command for /ocr in README.md, found {lines}"
    return lines[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                                               os.environ.get("PYTHONPATH")]))}
    environment.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "dotocr.server", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environment, creationflags=NEW_GROUP)


def wait_ready(process: subprocess.Popen, port: int, timeout: float = 150) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"dotocr-serve exited: {process.communicate()[1]}")
        try:
            health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
            if health["status"] != "loading":
                return health
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("dotocr-serve did not become ready")


def stop(process: subprocess.Popen) -> str:
    """Ctrl+C, as a person stops it; returns stderr."""
    interrupt(process)
    try:
        _out, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        _out, err = process.communicate()
        raise AssertionError(f"dotocr-serve did not stop on Ctrl+C: {err}") from None
    return err


@pytest.fixture(scope="module")
def served(dots_tiny: Path) -> Iterator[int]:
    port = free_port()
    process = serve(["--port", str(port), "--model", str(dots_tiny), "--device", "cpu", "--precision", "fp32",
                     "--max-new-tokens", "4", "--max-image-size", "448"])
    try:
        assert wait_ready(process, port)["status"] == "ready"
        yield port
    finally:
        stderr = stop(process)
        assert "Traceback" not in stderr, stderr
        assert "this machine only" in stderr


def curl(command: str, port: int, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(shlex.split(command.replace(":8765", f":{port}")), cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@needs_curl
def test_readme_curl_command_as_written(served: int, tmp_path: Path) -> None:
    (tmp_path / "shot.png").write_bytes(png_bytes((210, 64), "README"))
    command = readme_curl()
    assert "file=@shot.png" in command  # the file this test provides
    done = curl(command, served, tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["file"] == "shot.png" and result["prompt"] == "text"
    assert (result["width"], result["height"]) == (210, 64)
    assert {"text", "raw", "stop_reason", "image_tokens", "generated_tokens", "timings"} <= set(result)


@needs_curl
def test_curl_with_format_markdown(served: int, tmp_path: Path) -> None:
    (tmp_path / "shot.png").write_bytes(png_bytes())
    done = curl("curl -F file=@shot.png -F prompt=layout -F format=markdown http://127.0.0.1:8765/ocr",
                served, tmp_path)
    result = json.loads(done.stdout)
    assert result["prompt"] == "layout" and isinstance(result["cells"], list)


@needs_curl
def test_curl_with_a_text_file_gets_a_json_sentence(served: int, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a picture")
    done = curl("curl -s -w '\\n%{http_code}' -F file=@notes.txt http://127.0.0.1:8765/ocr", served, tmp_path)
    body, status = done.stdout.rsplit("\n", 1)
    assert status == "415"
    assert "'notes.txt' is not an image format" in json.loads(body)["error"]["message"]


def test_network_address_with_token_from_env_and_port_from_settings(dots_tiny: Path, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "settings.toml"
    config.write_text(f"api_port = {port}\nmodel = '{dots_tiny}'\ndevice = \"cpu\"\nprecision = \"fp32\"\n")
    process = serve(["--host", "0.0.0.0"], env={"DOTOCR_API_TOKEN": "s3cret", "DOTOCR_CONFIG": str(config)})
    try:
        wait_ready(process, port)
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 401
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": "Bearer s3cret"})
        assert models.json()["data"][0]["id"] == str(dots_tiny)
    finally:
        stderr = stop(process)
    assert "reachable from the network" in stderr and "Authorization: Bearer" in stderr
    assert "s3cret" not in stderr  # the token itself is never printed
