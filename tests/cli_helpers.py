"""Shared by tests/test_cli.py and tests/test_doctor.py: running `python -m dotocr` for real, and
image files good and bad, crafted byte by byte where Pillow would refuse to write them."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "data" / "dots_tiny"
TINY_FLAGS = ["--model", str(TINY), "--device", "cpu", "--precision", "fp32", "--local",
              "--max-new-tokens", "8"]


def run_dotocr(*args: str, stdin: bytes | None = None, timeout: float = 180,
               env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m dotocr ARGS` in a child process; stdout and stderr decoded as UTF-8."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    done = subprocess.run([sys.executable, "-m", "dotocr", *args], input=stdin if stdin is not None else b"",
                          capture_output=True, timeout=timeout, env=full_env, cwd=cwd or REPO)
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode("utf-8"),
                                       done.stderr.decode("utf-8"))


NEW_GROUP = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
"""Popen's creationflags for a child that `interrupt` may stop: on Windows Ctrl+Break goes to a process group."""


def interrupt(process: subprocess.Popen) -> None:
    """Ctrl+C as a person gives it: SIGINT on POSIX. Windows has no SIGINT for another process; there a console
    sends Ctrl+Break to the child's process group (start it with `creationflags=NEW_GROUP`), which Python and
    uvicorn take as SIGBREAK. Without a console (Wine when our output is a pipe: GenerateConsoleCtrlEvent fails
    with error 12) the child is terminated instead, so only its start-up output can be checked."""
    if process.poll() is not None:
        return
    if sys.platform != "win32":
        process.send_signal(signal.SIGINT)
        return
    try:
        process.send_signal(signal.CTRL_BREAK_EVENT)
    except (OSError, SystemError):
        process.terminate()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def warm_server(port: int, log_path: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """A real `dotocr-serve` on the tiny checkpoint (CPU, fp32) on `port`, ready; stopped with Ctrl+C after."""
    from dotocr.cli.server_probe import probe_server

    full_env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    with open(log_path, "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "dotocr.server", "--port", str(port), *TINY_FLAGS[:6]],
                                  stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=REPO,
                                  creationflags=NEW_GROUP)
    try:
        deadline = time.monotonic() + 180
        while (found := probe_server(port)) is None or found.status != "ready":
            assert server.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "dotocr-serve did not get ready"
            time.sleep(0.3)
        yield server
    finally:
        interrupt(server)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@contextmanager
def in_process_cli(capsys) -> Iterator[Callable[..., subprocess.CompletedProcess]]:
    """`dotocr ARGS` in this process (the model loads in a fraction of a second; torch is already imported),
    output taken from `capsys`, the libraries' logging settings put back afterwards."""
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    bars = transformers_logging.is_progress_bar_enabled()

    def run(*argv: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
        from dotocr.cli import main

        capsys.readouterr()
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(argv, code, captured.out, captured.err)

    try:
        yield run
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bars:
            transformers_logging.enable_progress_bar()


def text_image(path: Path, size: tuple[int, int], words: str = "Hello 42") -> Path:
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).text((4, 4), words, fill="black")
    image.save(path)
    return path


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_with_header(width: int, height: int, pixels: bytes = b"") -> bytes:
    """A PNG whose IHDR claims `width` x `height` (8-bit RGB), with `pixels` as its only data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(pixels)) + png_chunk(b"IEND", b""))


def write_bad_files(folder: Path) -> dict[str, Path]:
    """The four ways an input goes wrong: not an image, truncated, 0 x 0, decompression bomb."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "not_image": folder / "notes.png",
        "truncated": folder / "truncated.png",
        "zero": folder / "zero.png",
        "bomb": folder / "bomb.png",
    }
    files["not_image"].write_text("this is a shopping list, not a picture\n", encoding="utf-8")
    good = folder / "_whole.png"
    text_image(good, (300, 120))
    data = good.read_bytes()
    good.unlink()
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["zero"].write_bytes(png_with_header(0, 0))
    files["bomb"].write_bytes(png_with_header(60000, 60000, b"\x00" * 64))
    return files
