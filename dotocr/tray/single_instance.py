"""One tray per user: the first instance listens on a local socket; later launches hand it a message.

Address: a Windows named pipe \\\\.\\pipe\\dotocr-<user>-<tag>, an abstract Unix socket
\\0dotocr-<user>-<tag> on Linux (nothing on disk, so nothing goes stale after a crash), and a socket
file in the user's runtime folder elsewhere (a stale file left by a crash is detected and replaced).
<tag> is a short hash of the data folder, so instances that use different data folders (tests, a
second profile) never talk to each other.

Authentication: multiprocessing.connection's HMAC challenge with a random 32-byte key made once per
install and kept in <data dir>/instance.key, created with 0600 permissions (on Windows the per-user
AppData folder's ACL already keeps other users out). Abstract sockets and named pipes can be reached
by other local users, so the key, not the address, is what proves a message comes from this user.
Messages are short UTF-8 strings sent as raw bytes, never pickles.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import logging
import os
import re
import secrets
import socket
import sys
import tempfile
import threading
from collections.abc import Callable
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener, answer_challenge, deliver_challenge
from pathlib import Path

from dotocr.config import data_dir

log = logging.getLogger(__name__)

KEY_FILE = "instance.key"
MAX_MESSAGE = 4096
_ACK = b"ok"
_MESSAGE_TIMEOUT = 5.0


def _user() -> str:
    try:
        name = getpass.getuser()
    except Exception:  # no USER/LOGNAME and no passwd entry
        name = str(os.getuid()) if hasattr(os, "getuid") else "user"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:32] or "user"


def default_address(folder: Path | None = None) -> tuple[str, str]:
    """(address, family) for this user and data folder."""
    folder = Path(folder) if folder is not None else data_dir()
    tag = hashlib.sha256(str(folder.expanduser().absolute()).encode()).hexdigest()[:10]
    name = f"dotocr-{_user()}-{tag}"
    if sys.platform == "win32":
        return rf"\\.\pipe\{name}", "AF_PIPE"
    if sys.platform.startswith("linux"):
        return f"\0{name}", "AF_UNIX"
    runtime = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()  # per-user on macOS
    return str(Path(runtime) / f"{name}.sock"), "AF_UNIX"


def load_authkey(folder: Path | None = None) -> bytes:
    """This install's key, made on first use; racing instances agree, as the file is linked in atomically."""
    folder = Path(folder) if folder is not None else data_dir()
    path = folder / KEY_FILE
    try:
        key = path.read_bytes()
        if len(key) >= 16:
            return key
    except FileNotFoundError:
        pass
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{KEY_FILE}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(secrets.token_bytes(32))
    try:
        try:
            os.link(tmp, path)  # fails if another instance got there first; then we use theirs
        except FileExistsError:
            if len(path.read_bytes()) < 16:  # an empty or truncated key file: replace it
                os.replace(tmp, path)
        except OSError:  # no hard links on this file system
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes()


def _is_stale_socket_file(address: str) -> bool:
    """True when `address` is a socket file nobody listens on any more (left by a crash)."""
    if address.startswith("\0") or not os.path.exists(address):
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(address)
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    finally:
        probe.close()
    return False


class InstanceServer:
    """Listens for messages from later launches; `on_message` runs on a short-lived thread of ours."""

    def __init__(self, address: str | None = None, family: str | None = None,
                 authkey: bytes | None = None) -> None:
        default, default_family = default_address()
        self.address = address or default
        self.family = family or (default_family if address is None else _family_of(self.address))
        self._authkey = authkey
        self._listener: Listener | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self, on_message: Callable[[str], None]) -> bool:
        """Begin listening; False when another instance already owns the address."""
        if self._listener is not None:
            return True
        authkey = self._authkey if self._authkey is not None else load_authkey()
        self._authkey = authkey
        try:
            listener = Listener(self.address, self.family)
        except OSError:
            if self.family == "AF_UNIX" and _is_stale_socket_file(self.address):
                log.info("Removing the stale socket %s left by an instance that did not exit cleanly.",
                         self.address)
                os.unlink(self.address)
                try:
                    listener = Listener(self.address, self.family)
                except OSError:
                    return False
            else:
                return False
        self._listener = listener
        self._stopping.clear()
        self._thread = threading.Thread(target=self._accept_loop, args=(listener, on_message),
                                        name="dotocr-instance", daemon=True)
        self._thread.start()
        return True

    def _accept_loop(self, listener: Listener, on_message: Callable[[str], None]) -> None:
        while not self._stopping.is_set():
            try:
                conn = listener.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                log.exception("The single-instance listener failed")
                return
            if self._stopping.is_set():
                conn.close()
                return
            threading.Thread(target=self._serve, args=(conn, on_message), daemon=True,
                             name="dotocr-instance-client").start()

    def _serve(self, conn: Connection, on_message: Callable[[str], None]) -> None:
        """Authenticate one client and take its message.

        The HMAC handshake is Listener(authkey=...)'s own, run here on the client's thread instead of
        in accept(), so a client that connects and stays silent cannot stall the accept loop.
        """
        try:
            deliver_challenge(conn, self._authkey)
            answer_challenge(conn, self._authkey)
            if not conn.poll(_MESSAGE_TIMEOUT):
                return
            message = conn.recv_bytes(MAX_MESSAGE).decode("utf-8", errors="replace")
            try:
                on_message(message)
            except Exception:
                log.exception("Handling the message %r from another launch failed", message)
            conn.send_bytes(_ACK)
        except AuthenticationError:
            log.warning("Refused a connection to %s that did not know this user's key.", self.address)
        except (OSError, EOFError, ValueError):
            pass  # the client went away
        finally:
            conn.close()

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is None:
            return
        self._stopping.set()
        with contextlib.suppress(OSError):  # wake accept(): closing the socket alone does not everywhere
            Client(self.address, self.family).close()
        listener.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2.0)
        self._thread = None


def _family_of(address: str) -> str:
    return "AF_PIPE" if address.startswith("\\\\") else "AF_UNIX"


def send_to_running(message: str = "capture", timeout: float = 2.0, *, address: str | None = None,
                    authkey: bytes | None = None) -> bool:
    """True if a running instance took `message`. Never blocks longer than `timeout`, never raises."""
    if address is None:
        address, family = default_address()
    else:
        family = _family_of(address)
    outcome: list[bool] = []

    def talk() -> None:
        try:
            key = authkey if authkey is not None else load_authkey()
            with Client(address, family, authkey=key) as conn:
                conn.send_bytes(message.encode("utf-8")[:MAX_MESSAGE])
                if conn.poll(timeout) and conn.recv_bytes(16) == _ACK:
                    outcome.append(True)
        except (OSError, EOFError, AuthenticationError, ValueError):
            pass
        except Exception:
            log.exception("Talking to the running instance failed")

    thread = threading.Thread(target=talk, name="dotocr-instance-send", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(outcome)
