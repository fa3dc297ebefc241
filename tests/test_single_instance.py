"""One tray per user: a real listener, real second processes, real HMAC authentication."""

from __future__ import annotations

import os
import queue
import socket
import stat
import subprocess
import sys
import time
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client
from pathlib import Path

import pytest

from dotocr.config import data_dir
from dotocr.tray.single_instance import InstanceServer, default_address, load_authkey, send_to_running

pytestmark = pytest.mark.timeout(60)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def server():
    received: queue.Queue[str] = queue.Queue()
    instance = InstanceServer()
    assert instance.start(received.put)
    yield instance, received
    instance.stop()


def test_a_second_process_hands_capture_to_the_running_instance(server):
    instance, received = server
    code = "import sys; from dotocr.tray.single_instance import send_to_running; " \
           "sys.exit(0 if send_to_running('capture') else 1)"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert received.get(timeout=5) == "capture"


def test_a_second_server_is_refused_while_the_first_runs(server):
    assert InstanceServer().start(lambda message: None) is False


def test_without_a_running_instance_send_is_false_and_quick():
    started = time.monotonic()
    assert send_to_running("capture") is False
    assert time.monotonic() - started < 0.5


def test_stop_releases_the_address(server):
    instance, received = server
    instance.stop()
    assert send_to_running("capture") is False
    again = InstanceServer()
    assert again.start(received.put)
    try:
        assert send_to_running("again")
        assert received.get(timeout=5) == "again"
    finally:
        again.stop()


def test_wrong_authkey_is_refused_and_the_server_keeps_working(server):
    instance, received = server
    address, family = default_address()
    with pytest.raises(AuthenticationError):
        Client(address, family, authkey=b"not this user's key, 32 bytes..")
    assert send_to_running("capture", authkey=b"x" * 32) is False
    assert received.empty()
    assert send_to_running("capture")
    assert received.get(timeout=5) == "capture"


def test_a_silent_client_does_not_block_others(server):
    instance, received = server
    address, family = default_address()
    silent = Client(address, family)  # connects, never answers the challenge
    try:
        assert send_to_running("capture")
        assert received.get(timeout=5) == "capture"
    finally:
        silent.close()


def test_a_raising_handler_does_not_stop_the_server():
    calls: list[str] = []

    def handler(message: str) -> None:
        calls.append(message)
        raise RuntimeError("handler bug")

    instance = InstanceServer()
    assert instance.start(handler)
    try:
        assert send_to_running("one") and send_to_running("two")
        assert calls == ["one", "two"]
    finally:
        instance.stop()


def test_stale_socket_file_after_a_crash_is_replaced(tmp_path):
    path = str(tmp_path / "dotocr.sock")
    crashed = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    crashed.bind(path)
    crashed.listen()
    crashed.close()  # the file stays, as after a crash; nobody listens on it
    assert Path(path).exists()
    received: queue.Queue[str] = queue.Queue()
    instance = InstanceServer(address=path)
    assert instance.start(received.put)
    try:
        assert send_to_running("capture", address=path)
        assert received.get(timeout=5) == "capture"
        assert InstanceServer(address=path).start(received.put) is False  # a live socket is not stale
    finally:
        instance.stop()
    assert not Path(path).exists()


def test_key_is_private_stable_and_per_data_dir(tmp_path):
    key = load_authkey()
    path = data_dir() / "instance.key"
    assert len(key) == 32 and load_authkey() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_authkey(tmp_path) != key


def test_address_names_the_user_and_differs_per_data_dir(tmp_path):
    address, _family = default_address()
    other, _ = default_address(tmp_path)
    assert "dotocr-" in address and address != other
    if sys.platform.startswith("linux"):
        assert address.startswith("\0")  # abstract: nothing on disk to go stale
