"""Finding a dotocr server (dotocr-serve, or the tray's local API) already running on this machine.

One warm model per machine: a 6 GiB GPU holds one copy of dots.ocr, so `dotocr ocr` borrows a
running server's model rather than loading a second one. The probe is stdlib-only and short
(0.3 s) so it costs nothing when no server runs. Anything may listen on that port, another user's program
included, so the probe sends a challenge that only a server knowing this user's secret answers (see
`dotocr.local_secret`); nothing else (no image, no token) goes to a server that has not answered it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from dotocr.local_secret import CHALLENGE_HEADER, new_challenge, proves, read_secret
from dotocr.loopback import LOOPBACK_ADDRESS

PROBE_TIMEOUT_S = 0.3


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
    """The dotocr server answering on `host:port`, or None when nothing (or something else) answers."""
    base_url = f"http://{host}:{port}"
    # An empty ProxyHandler: a corporate HTTP_PROXY must never see, or swallow, a loopback probe.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    challenge = new_challenge()
    request = urllib.request.Request(base_url + "/health", headers={CHALLENGE_HEADER: challenge})
    try:
        with opener.open(request, timeout=timeout) as response:
            body = response.read(64 * 1024)
    except urllib.error.HTTPError as exc:
        # A loading server answers 503 with a JSON body; anything else is not ours.
        try:
            body = exc.read(64 * 1024)
        except OSError:
            return None
    except (OSError, ValueError):
        return None
    return parse_health(base_url, body, challenge, port)


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
