"""`dotocr ocr` with engine = "remote": several requests in flight, results in input order. The remote server
is a real dotocr-serve on loopback running the tiny checkpoint; the CLI runs in this process."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from server_helpers import SlowEngine, running_server, tiny_settings

from dotocr.engine.remote import RemoteEngine
from tests.cli_helpers import in_process_cli, text_image

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def cli(capsys):
    with in_process_cli(capsys) as run:
        yield run


def test_remote_engine_keeps_requests_in_flight_and_writes_in_order(cli, dots_tiny: Path, tmp_path, monkeypatch):
    engine = SlowEngine(tiny_settings(dots_tiny, max_new_tokens=6))
    engine.delay = 0.02
    sizes = [(120 + 40 * n, 40 + 7 * n) for n in range(8)]
    images = [text_image(tmp_path / f"shot{n}.png", size) for n, size in enumerate(sizes)]
    in_flight, most = 0, 0
    lock = threading.Lock()
    real_complete = RemoteEngine._complete

    def counting_complete(self, *args, **kwargs):  # the real exchange, with a count of how many overlap
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        try:
            return real_complete(self, *args, **kwargs)
        finally:
            with lock:
                in_flight -= 1

    monkeypatch.setattr(RemoteEngine, "_complete", counting_complete)
    with running_server(engine) as url:
        settings = Path(os.environ["DOTOCR_CONFIG"])
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(f'engine = "remote"\nremote_url = "{url}/v1"\nmax_new_tokens = 6\n', encoding="utf-8")
        done = cli("ocr", *(str(p) for p in images), "--format", "json", "--concurrency", "4")
        assert done.returncode == 0, done.stderr
        results = [json.loads(line) for line in done.stdout.splitlines()]
        assert [r["file"] for r in results] == [str(p) for p in images]
        assert [(r["width"], r["height"]) for r in results] == sizes
        assert most >= 2  # the requests really overlapped (the server lines them up)

        most = 0
        one = cli("ocr", *(str(p) for p in images[:3]), "--format", "json", "--concurrency", "1")
        assert one.returncode == 0 and most == 1
