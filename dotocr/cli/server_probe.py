"""Finding a dotocr server (dotocr-serve, or the tray's local API) already running on this machine.

One warm model per machine: a 6 GiB GPU holds one copy of dots.ocr, so `dotocr ocr` borrows a
running server's model rather than loading a second one. The probe is stdlib-only and short
(0.3 s, for the whole exchange: a listener that trickles a byte at a time gets no more time than one that says
nothing) so it costs nothing when no server runs. Anything may listen on that port, another user's program
included, so the probe sends a challenge that only a server knowing this user's secret answers (see
`dotocr.local_secret`); nothing else (no image, no token) goes to a server that has not answered it.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Any

from dotocr.local_secret import CHALLENGE_HEADER, new_challenge, proves, read_secret
from dotocr.loopback import LOOPBACK_ADDRESS

PROBE_TIMEOUT_S = 0.3
MAX_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True)
class RunningServer:
    base_url: str
    """http://127.0.0.1:PORT, without a trailing slash."""
    status: str
    model: str | None
    device: str | None
    precision: str | None
    verified: bool = False
    """It answered the challenge: it knows this user's secret, so it is one of this user's servers."""

    @property
    def openai_url(self) -> str:
        return self.base_url + "/v1"

    def describe(self) -> str:
        parts = [p for p in (self.device, self.precision) if p]
        where = f" ({', '.join(parts)})" if parts else ""
        return f"{self.base_url}{where}"


def probe_server(port: int, host: str = LOOPBACK_ADDRESS,
                 timeout: float = PROBE_TIMEOUT_S) -> RunningServer | None:
    """The dotocr server answering on `host:port`, or None when nothing (or something else) answers in time."""
    challenge = new_challenge()
    try:
        body = _get(host, port, "/health", {CHALLENGE_HEADER: challenge}, time.monotonic() + timeout)
    except (OSError, ValueError):
        return None
    return None if body is None else parse_health(f"http://{host}:{port}", body, challenge, port)


def _get(host: str, port: int, path: str, headers: dict[str, str], deadline: float) -> bytes | None:
    """The body of `GET path` (whatever the status: a loading server answers 503), or None when the whole
    exchange is not over by `deadline` or the answer is no HTTP. A plain socket: no proxy ever sees it."""
    lines = [f"GET {path} HTTP/1.0", f"Host: {host}:{port}", *(f"{k}: {v}" for k, v in headers.items())]
    with socket.create_connection((host, port), timeout=_left(deadline)) as sock:
        sock.settimeout(_left(deadline))
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))
        answer = bytearray()
        while len(answer) <= MAX_ANSWER_BYTES:
            sock.settimeout(_left(deadline))  # the time left, not a fresh timeout per read
            chunk = sock.recv(MAX_ANSWER_BYTES)
            if not chunk:
                break
            answer += chunk
            if _complete(answer):
                break
    head, separator, body = bytes(answer).partition(b"\r\n\r\n")
    if not separator or not head.startswith(b"HTTP/1."):
        return None
    return body


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the probe's time is up")
    return left


def _complete(answer: bytearray) -> bool:
    """Whether an answer with a Content-Length has all of its body (one without ends when the server closes)."""
    head, separator, body = bytes(answer).partition(b"\r\n\r\n")
    if not separator:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return len(body) >= int(value.strip())
    return False


def parse_health(base_url: str, body: bytes, challenge: str = "", port: int = 0) -> RunningServer | None:
    try:
        data: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or data.get("service") != "dotocr" or not isinstance(data.get("status"), str):
        return None

    def text(key: str) -> str | None:
        value = data.get(key)
        return value if isinstance(value, str) and value else None

    verified = bool(challenge) and proves(read_secret(), challenge, port, data.get("proof"))
    return RunningServer(base_url, data["status"], text("model"), text("device"), text("precision"), verified)
