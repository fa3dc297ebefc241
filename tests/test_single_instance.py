"""One tray per user: a real listener, real second processes, real HMAC authentication, real floods."""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from dotocr.config import data_dir
from dotocr.tray.single_instance import (
    ADDRESS_FILE,
    HANDSHAKE_TIMEOUT,
    MAX_CLIENTS,
    InstanceServer,
    load_authkey,
    read_address,
    send_to_running,
)

pytestmark = pytest.mark.timeout(60)
REPO = Path(__file__).resolve().parents[1]
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="Windows fact: the tray's single instance is the "
                                "msvcrt lock and a loopback TCP hand-off there, no Unix socket with POSIX modes")
FAMILIES = ["unix", "tcp"] if sys.platform != "win32" else ["tcp"]  # tcp: what Windows uses


@pytest.fixture(params=FAMILIES)
def server(request):
    received: queue.Queue[str] = queue.Queue()
    instance = InstanceServer(family=request.param)
    assert instance.start(received.put), instance.problem
    yield instance, received
    instance.stop()


def raw_connect(address: str) -> socket.socket:
    kind, _, where = address.partition(":")
    if kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(where)
    else:
        host, _, port = where.rpartition(":")
        sock = socket.create_connection((host, int(port)))
    return sock


def test_a_second_process_hands_capture_to_the_running_instance(server):
    instance, received = server
    code = "import sys; from dotocr.tray.single_instance import send_to_running; " \
           "sys.exit(0 if send_to_running('capture') else 1)"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert received.get(timeout=5) == "capture"


def test_a_second_server_is_refused_while_the_first_runs_and_is_told_to_hand_over(server):
    second = InstanceServer()
    assert second.start(lambda message: None) is False
    assert second.problem is None  # not a failure: another instance of ours runs


def test_without_a_running_instance_send_is_false_and_quick():
    started = time.monotonic()
    assert send_to_running("capture") is False
    assert time.monotonic() - started < 0.5


def test_stop_releases_the_address(server):
    instance, received = server
    instance.stop()
    assert send_to_running("capture") is False
    assert not (data_dir() / ADDRESS_FILE).exists()
    again = InstanceServer()
    assert again.start(received.put)
    try:
        assert send_to_running("again")
        assert received.get(timeout=5) == "again"
    finally:
        again.stop()


def test_a_wrong_key_is_refused_and_the_server_keeps_working(server):
    instance, received = server
    assert send_to_running("capture", authkey=b"x" * 32) is False
    assert received.empty()
    assert send_to_running("capture")
    assert received.get(timeout=5) == "capture"


def test_an_impostor_that_does_not_know_the_key_is_not_believed(tmp_path):
    """A listener that answers the protocol without the key: the client says False."""
    impostor = InstanceServer(tmp_path / "other", family="tcp", authkey=b"k" * 32)
    assert impostor.start(lambda message: None)
    try:
        (data_dir()).mkdir(parents=True, exist_ok=True)
        load_authkey()
        (data_dir() / ADDRESS_FILE).write_text(impostor.address or "")
        assert send_to_running("capture") is False
    finally:
        impostor.stop()


def test_300_silent_connections_pin_no_threads_and_are_dropped(server):
    instance, received = server
    baseline = threading.active_count()
    address = instance.address or ""
    silent: list[socket.socket] = []
    try:
        for _ in range(300):
            with contextlib.suppress(OSError):  # the backlog full for a moment: the flood is no less a flood
                silent.append(raw_connect(address))
        peak = baseline
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            peak = max(peak, threading.active_count())
            time.sleep(0.01)
        assert peak <= baseline + MAX_CLIENTS
        assert len(silent) >= 200
        started = time.monotonic()
        assert send_to_running("capture", timeout=HANDSHAKE_TIMEOUT + 3)  # a real launch still gets through
        assert received.get(timeout=5) == "capture"
        assert time.monotonic() - started < HANDSHAKE_TIMEOUT + 3
        time.sleep(HANDSHAKE_TIMEOUT + 0.5)
        for sock in silent:  # every silent connection was closed by the server
            sock.settimeout(2)
            with contextlib.suppress(ConnectionError):  # a reset counts as closed too
                while True:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
        assert threading.active_count() <= baseline
    finally:
        for sock in silent:
            sock.close()


def test_a_client_trickling_bytes_is_cut_off_at_the_deadline(server):
    instance, received = server
    sock = raw_connect(instance.address or "")
    try:
        sock.settimeout(5)
        sock.recv(64)  # the challenge
        started = time.monotonic()
        with contextlib.suppress(ConnectionError):  # a reset counts as closed too
            for _ in range(40):
                sock.sendall(b"x")  # one byte at a time, never a whole answer
                time.sleep(0.2)
        assert time.monotonic() - started < HANDSHAKE_TIMEOUT + 1.5
    finally:
        sock.close()
    assert received.empty()


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


CRASHING_SERVER = """
import os, sys, time
from dotocr.tray.single_instance import InstanceServer
assert InstanceServer().start(lambda message: None)
print("listening", flush=True)
time.sleep(60)
"""


@posix_only
def test_after_a_crash_the_next_instance_starts_and_cleans_up():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    crashed = subprocess.Popen([sys.executable, "-c", CRASHING_SERVER], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert crashed.stdout is not None and crashed.stdout.readline().strip() == "listening"
        old = read_address()
        assert old is not None and old.startswith("unix:")
        assert InstanceServer().start(lambda message: None) is False  # it holds the lock while alive
    finally:
        crashed.kill()  # SIGKILL: no clean-up ran
        crashed.wait(10)
    assert send_to_running("capture") is False  # the address left behind answers nobody
    received: queue.Queue[str] = queue.Queue()
    instance = InstanceServer()
    assert instance.start(received.put)
    try:
        assert not os.path.exists(old.removeprefix("unix:"))  # the crashed one's socket folder is gone
        assert send_to_running("capture") and received.get(timeout=5) == "capture"
    finally:
        instance.stop()


@posix_only
def test_the_socket_is_in_a_folder_only_this_user_can_enter(server):
    instance, _received = server
    if instance.family != "unix":
        pytest.skip("unix sockets only")
    path = (instance.address or "").removeprefix("unix:")
    folder = os.path.dirname(path)
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700 and os.stat(folder).st_uid == os.getuid()
    assert stat.S_IMODE((data_dir() / ADDRESS_FILE).stat().st_mode) == 0o600
    other = InstanceServer(data_dir().parent / "other-profile")
    assert other.start(lambda message: None)  # a second data folder, a second unguessable address
    try:
        assert other.address != instance.address
    finally:
        other.stop()


@posix_only
def test_a_client_never_connects_to_a_socket_in_a_folder_others_can_enter(tmp_path):
    """An address file pointing at a socket in a shared folder (as another user could arrange in /tmp)
    is not trusted: nothing is sent there."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    path = str(shared / "tray.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    listener.settimeout(0.5)
    try:
        load_authkey()
        (data_dir() / ADDRESS_FILE).write_text(f"unix:{path}")
        assert send_to_running("capture") is False
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()


@posix_only
def test_no_address_gives_one_sentence_not_a_silent_exit(monkeypatch, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with monkeypatch.context() as patch:
        patch.delenv("XDG_RUNTIME_DIR", raising=False)
        patch.setattr(tempfile, "tempdir", str(blocker))  # mkdtemp there fails, as on a full or odd system
        instance = InstanceServer(family="unix")
        assert instance.start(lambda message: None) is False
    assert instance.problem and "could not open its single-instance address" in instance.problem
    assert "\n" not in instance.problem
    again = InstanceServer()  # the lock was released with the failure
    try:
        assert again.start(lambda message: None)
    finally:
        again.stop()


def test_key_is_private_stable_and_per_data_dir(tmp_path):
    key = load_authkey()
    path = data_dir() / "instance.key"
    assert len(key) == 32 and load_authkey() == key
    if sys.platform != "win32":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_authkey(tmp_path) != key
    path.write_bytes(b"short")  # truncated: replaced, not used
    assert len(load_authkey()) == 32


def test_racing_first_launches_agree_on_one_key():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    code = "from dotocr.tray.single_instance import load_authkey; print(load_authkey().hex())"
    runs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
            for _ in range(3)]
    keys = {run.communicate(timeout=30)[0].strip() for run in runs}
    assert len(keys) == 1 and len(next(iter(keys))) == 64
