"""One tray per user: the first instance listens on a private address; later launches hand it a message.

Who is running: the first instance holds an exclusive lock on <data dir>/instance.lock for its whole
life (released by the operating system if it crashes, so nothing goes stale). Where to reach it: the
address it listens on is written to <data dir>/instance.address (0600). The address cannot be taken
first by anyone: on POSIX it is a Unix socket inside a fresh folder with an unpredictable name made by
tempfile.mkdtemp (0700, in $XDG_RUNTIME_DIR when that is private, else the temp folder), so other users
cannot even connect; on Windows it is a loopback TCP port chosen by the system, and the address file
lives in the per-user AppData folder, which other users cannot read. A client checks that the socket's
folder belongs to this user and is private before it connects.

Authentication: an HMAC challenge with a random 32-byte key made once per install and kept in
<data dir>/instance.key (0600). The server proves it knows the key too, so a client never takes an
impostor's word. Every read has a deadline (HANDSHAKE_TIMEOUT for the whole exchange), at most
MAX_CLIENTS connections are served at once and the rest are closed on accept, so silent or slow
connections cannot pin threads. Messages are short UTF-8 strings sent as raw bytes, never pickles.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import socket
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from dotocr.config import data_dir
from dotocr.loopback import LOOPBACK_ADDRESS
from dotocr.storage import hold_lock, locked, make_private_folder, read_limited, write_atomic

log = logging.getLogger(__name__)

KEY_FILE = "instance.key"
LOCK_FILE = "instance.lock"
ADDRESS_FILE = "instance.address"
MAX_MESSAGE = 4096
MAX_CLIENTS = 4
HANDSHAKE_TIMEOUT = 2.0
_MAGIC = b"dotocr-instance/1"
_NONCE = 32
_MAC = 32
_IS_WINDOWS = sys.platform == "win32"


# -- the key -----------------------------------------------------------------------------------------------

def load_authkey(folder: Path | None = None) -> bytes:
    """This install's key, made on first use; racing instances agree, as it is made under the file's lock."""
    folder = Path(folder) if folder is not None else data_dir()
    path = folder / KEY_FILE
    key = _read_key(path)
    if key is not None:
        return key
    with locked(path):
        key = _read_key(path)
        if key is None:  # missing, or empty/truncated: make a new one
            key = secrets.token_bytes(32)
            write_atomic(path, key)
    return key


def _read_key(path: Path) -> bytes | None:
    try:
        key = read_limited(path, 1024)
    except OSError:
        return None
    return key if len(key) >= 16 else None


def _mac(key: bytes, role: bytes, nonce: bytes, message: bytes) -> bytes:
    return hmac.new(key, role + b"\0" + nonce + message, hashlib.sha256).digest()


# -- addresses ---------------------------------------------------------------------------------------------

def _runtime_base() -> str:
    """$XDG_RUNTIME_DIR when it is this user's private folder and short enough for a socket path, else the
    temporary folder (safe too: the socket's own folder is made by mkdtemp)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR") or ""
    if runtime and os.path.isabs(runtime) and len(runtime) < 70:
        with contextlib.suppress(OSError):
            info = os.stat(runtime)
            if stat.S_ISDIR(info.st_mode) and _is_private(info):
                return runtime
    return tempfile.gettempdir()


def _is_private(info: os.stat_result) -> bool:
    """Owned by this user and closed to everyone else (POSIX)."""
    return hasattr(os, "getuid") and info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) & 0o077 == 0


def _trusted_unix_path(path: str) -> bool:
    """True when `path` is a socket of ours in a folder only we can enter: the only kind we connect to."""
    try:
        folder, sock = os.lstat(os.path.dirname(path)), os.lstat(path)
    except OSError:
        return False
    return (stat.S_ISDIR(folder.st_mode) and _is_private(folder) and stat.S_ISSOCK(sock.st_mode)
            and sock.st_uid == folder.st_uid)


def read_address(folder: Path | None = None) -> str | None:
    """The running instance's address ("unix:/path" or "tcp:127.0.0.1:port"), None when none is written."""
    folder = Path(folder) if folder is not None else data_dir()
    try:
        text = read_limited(folder / ADDRESS_FILE, 4096).decode("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if text.startswith(("unix:", "tcp:")) else None


def _connect(address: str, timeout: float) -> socket.socket | None:
    kind, _, where = address.partition(":")
    if kind == "unix":
        if _IS_WINDOWS or not _trusted_unix_path(where):
            return None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: object = where
    else:
        host, _, port = where.rpartition(":")
        if host != LOOPBACK_ADDRESS or not port.isdigit():
            return None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        target = (host, int(port))
    sock.settimeout(max(0.01, timeout))
    try:
        sock.connect(target)
    except OSError:
        sock.close()
        return None
    return sock


def _recv_exact(sock: socket.socket, size: int, deadline: float) -> bytes:
    """Exactly `size` bytes before `deadline`; TimeoutError or EOFError otherwise. Each wait is bounded by
    the time left, so a client trickling one byte at a time cannot stretch the exchange."""
    data = b""
    while len(data) < size:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the other side was too slow")
        sock.settimeout(left)
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError("the other side closed the connection")
        data += chunk
    return data


# -- the server --------------------------------------------------------------------------------------------

class InstanceServer:
    """Listens for messages from later launches; `on_message` runs on one of at most MAX_CLIENTS short threads.

    `start` is False either because another instance of ours runs (then `problem` is None: hand over to it)
    or because no address could be opened (then `problem` is the sentence to show)."""

    def __init__(self, folder: Path | None = None, *, family: str | None = None,
                 authkey: bytes | None = None) -> None:
        self.folder = Path(folder) if folder is not None else data_dir()
        self.family = family or ("tcp" if _IS_WINDOWS else "unix")
        self.address: str | None = None
        self.problem: str | None = None
        self._authkey = authkey
        self._lock_fd: int | None = None
        self._listener: socket.socket | None = None
        self._listener_socket: socket.socket | None = None
        self._socket_dir: str | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self._last_warning = 0.0

    def start(self, on_message: Callable[[str], None]) -> bool:
        if self._listener is not None:
            return True
        self.problem = None
        try:
            make_private_folder(self.folder)
            if not self._take_lock():
                return False  # another instance of ours runs: the caller hands over to it
            self._authkey = self._authkey if self._authkey is not None else load_authkey(self.folder)
            self._remove_stale()
            listener = self._listen()
            write_atomic(self.folder / ADDRESS_FILE, self.address or "")
        except OSError as exc:
            self.problem = (f"dotocr-tray could not open its single-instance address ({exc.strerror or exc}); "
                            f"check that {self.folder} and {_runtime_base()} are writable folders of yours.")
            self._close_listener()
            self._release_lock()
            return False
        self._listener = listener
        self._stopping.clear()
        self._thread = threading.Thread(target=self._accept_loop, args=(listener, on_message),
                                        name="dotocr-instance", daemon=True)
        self._thread.start()
        return True

    def _take_lock(self) -> bool:
        self._lock_fd = hold_lock(self.folder / LOCK_FILE)
        return self._lock_fd is not None

    def _release_lock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the lock

    def _listen(self) -> socket.socket:
        if self.family == "tcp":
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.bind((LOOPBACK_ADDRESS, 0))
            self.address = f"tcp:127.0.0.1:{listener.getsockname()[1]}"
        else:
            self._socket_dir = tempfile.mkdtemp(prefix="dotocr-", dir=_runtime_base())  # 0700, unguessable
            path = os.path.join(self._socket_dir, "tray.sock")
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                listener.bind(path)
            except OSError:
                listener.close()
                raise
            self.address = f"unix:{path}"
        listener.listen(16)
        listener.settimeout(0.2)  # accept() wakes up to notice stop()
        self._listener_socket = listener
        return listener

    def _remove_stale(self) -> None:
        """The socket folder a crashed instance left behind (we hold the lock, so it is not in use)."""
        old = read_address(self.folder)
        if old is None or not old.startswith("unix:"):
            return
        path = old.removeprefix("unix:")
        if _trusted_unix_path(path) and os.path.basename(os.path.dirname(path)).startswith("dotocr-"):
            with contextlib.suppress(OSError):
                os.unlink(path)
                os.rmdir(os.path.dirname(path))

    def _accept_loop(self, listener: socket.socket, on_message: Callable[[str], None]) -> None:
        while not self._stopping.is_set():
            try:
                conn, _peer = listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self._stopping.is_set():
                    return
                self._warn_once(f"The single-instance listener could not accept a connection ({exc}).")
                time.sleep(0.2)  # e.g. out of descriptors: try again later, without a log line per accept
                continue
            if not self._slots.acquire(blocking=False):
                conn.close()  # MAX_CLIENTS are being served: a later launch retries
                self._warn_once("Closed connections to the single-instance address: too many at once.")
                continue
            threading.Thread(target=self._serve, args=(conn, on_message), daemon=True,
                             name="dotocr-instance-client").start()

    def _serve(self, conn: socket.socket, on_message: Callable[[str], None]) -> None:
        """Challenge, check the client's MAC over its message, run the handler, prove ourselves."""
        try:
            deadline = time.monotonic() + HANDSHAKE_TIMEOUT
            nonce = secrets.token_bytes(_NONCE)
            conn.settimeout(HANDSHAKE_TIMEOUT)
            conn.sendall(_MAGIC + nonce)
            mac = _recv_exact(conn, _MAC, deadline)
            size = int.from_bytes(_recv_exact(conn, 2, deadline), "big")
            if size > MAX_MESSAGE:
                return
            message = _recv_exact(conn, size, deadline)
            if not hmac.compare_digest(mac, _mac(self._key(), b"client", nonce, message)):
                self._warn_once("Refused a connection to the single-instance address that did not know this "
                                "user's key.")
                return
            text = message.decode("utf-8", errors="replace")
            try:
                on_message(text)
            except Exception:
                log.exception("Handling the message %r from another launch failed", text)
            conn.settimeout(max(0.01, deadline - time.monotonic()))
            conn.sendall(_mac(self._key(), b"server", nonce, message))
        except (OSError, EOFError):
            pass  # the client went away or was too slow
        finally:
            conn.close()
            self._slots.release()

    def _key(self) -> bytes:
        assert self._authkey is not None
        return self._authkey

    def _warn_once(self, sentence: str) -> None:
        """At most one such line a minute, so a flood of connections cannot flood the log."""
        now = time.monotonic()
        if now - self._last_warning >= 60:
            self._last_warning = now
            log.warning("%s", sentence)

    def _close_listener(self) -> None:
        listener, self._listener_socket = self._listener_socket, None
        if listener is not None:
            listener.close()
        if self._socket_dir is not None:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self._socket_dir, "tray.sock"))
            with contextlib.suppress(OSError):
                os.rmdir(self._socket_dir)
            self._socket_dir = None

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is None:
            return
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2.0)
        self._thread = None
        if read_address(self.folder) == self.address:
            with contextlib.suppress(OSError):
                (self.folder / ADDRESS_FILE).unlink()
        self._close_listener()
        self._release_lock()


# -- the client --------------------------------------------------------------------------------------------

def send_to_running(message: str = "capture", timeout: float = 2.0, *, folder: Path | None = None,
                    authkey: bytes | None = None) -> bool:
    """True if the running instance took `message` and proved it knows this user's key. Never blocks longer
    than about `timeout`, never raises. Retries while the instance is busy with other connections."""
    folder = Path(folder) if folder is not None else data_dir()
    deadline = time.monotonic() + timeout
    address = read_address(folder)
    key = authkey if authkey is not None else _read_key(folder / KEY_FILE)
    if address is None or key is None:
        return False
    payload = message.encode("utf-8")[:MAX_MESSAGE]
    while True:
        outcome = _send_once(address, key, payload, deadline)
        if outcome is not None:
            return outcome
        if time.monotonic() + 0.05 >= deadline:
            return False
        time.sleep(0.05)


def _send_once(address: str, key: bytes, payload: bytes, deadline: float) -> bool | None:
    """True: delivered; False: refused or nobody there; None: dropped early (busy), worth another try."""
    sock = _connect(address, deadline - time.monotonic())
    if sock is None:
        return False
    try:
        try:
            hello = _recv_exact(sock, len(_MAGIC) + _NONCE, deadline)
        except EOFError:
            return None  # closed on accept: MAX_CLIENTS busy
        if not hello.startswith(_MAGIC):
            return False
        nonce = hello[len(_MAGIC):]
        sock.sendall(_mac(key, b"client", nonce, payload) + len(payload).to_bytes(2, "big") + payload)
        proof = _recv_exact(sock, _MAC, deadline)
        return hmac.compare_digest(proof, _mac(key, b"server", nonce, payload))
    except (OSError, EOFError):
        return False
    finally:
        sock.close()
