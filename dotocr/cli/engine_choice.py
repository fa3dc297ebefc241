"""Which engine `dotocr ocr` uses: a configured remote server, a dotocr server already running here,
or the model loaded in this process."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dotocr.cli.server_probe import RunningServer, probe_server
from dotocr.config import Settings
from dotocr.engine import LOADING_STATUSES

SERVER_WAIT_S = 900.0
"""How long to wait for a running server that is still loading (a first download can be slow)."""


def choose_engine(settings: Settings, *, local: bool, notice: Callable[[str], None]) -> Any:
    """An engine object for `settings` (nothing is loaded yet)."""
    from dotocr.engine import make_engine

    if settings.engine == "remote":
        notice(f"using the remote engine at {settings.remote_url}")
        return make_engine(settings)
    if not local:
        server = find_ready_server(settings, notice)
        if server is not None:
            notice(f"using the dotocr server at {server.describe()}; pass --local to load the model here")
            return make_engine(remote_settings_for(server, settings))
    return make_engine(settings)


def find_ready_server(settings: Settings, notice: Callable[[str], None],
                      wait_s: float = SERVER_WAIT_S) -> RunningServer | None:
    """The dotocr server on settings.api_port, once ready; None if there is none we should use."""
    server = probe_server(settings.api_port)
    if server is None:
        return None
    if not server.verified:
        notice(f"something on {server.base_url} answers like a dotocr server but cannot prove it is yours "
               "(it does not know this user's server secret); sending it nothing and loading the model here")
        return None
    if server.model and not same_model(server.model, settings.model):
        notice(f"a dotocr server at {server.base_url} runs {server.model}, not {settings.model}; "
               "loading the model here")
        return None
    if server.status in LOADING_STATUSES:
        notice(f"the dotocr server at {server.base_url} is still loading its model; waiting for it "
               "(pass --local to load the model here instead)")
        deadline = time.monotonic() + wait_s
        while server is not None and server.status in LOADING_STATUSES and time.monotonic() < deadline:
            time.sleep(0.5)
            server = probe_server(settings.api_port, timeout=2.0)
        if server is None or not server.verified:
            return None
    if server.status != "ready":
        notice(f"the dotocr server at {server.base_url} reports {server.status!r}; loading the model here")
        return None
    return server


def remote_settings_for(server: RunningServer, settings: Settings) -> Settings:
    """Settings that talk to our own local server: with the local API token only, never the key the
    settings hold for a remote server (that key is meant for that server alone)."""
    return settings.replace(
        engine="remote",
        remote_url=server.openai_url,
        remote_model=server.model or settings.remote_model,
        remote_api_key=os.environ.get("DOTOCR_API_TOKEN", ""),
    )


def same_model(a: str, b: str) -> bool:
    """Whether two model settings name the same checkpoint: equal repo ids, or the same folder."""
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.exists() and pb.exists():
        try:
            return pa.resolve() == pb.resolve()
        except OSError:
            return False
    return a.rstrip("/\\") == b.rstrip("/\\")
