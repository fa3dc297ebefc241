"""Every file dotocr writes goes through here: one atomic writer, one lock, one way to set a broken file aside.

Why one place: a fixed temporary name (`settings.toml.tmp`) lets two of our processes truncate each other's
half-written file and lets another local user plant a symlink there; a read-modify-write without a lock
loses one writer's keys. Here a write goes to a fresh temporary file in the target's folder (created
exclusively, never through a symlink), is flushed to disk, then renamed over the target, so a reader sees
the old file or the new one, never a partial one. Files that hold secrets or screen text are 0600 and the
folders we create for them 0700 (on Windows the per-user AppData folders' ACLs do this job).

Windows differs in one way that matters here: a rename over a file fails while any handle to that file is open
(MoveFileEx's classic semantics), so a reader would make a save fail. Our own readers of a file that writers
lock (`read_limited(..., writers_lock=True)`) therefore hold that lock while the file is open on Windows, so
our rename never meets our reader; and a rename that meets another program's handle (an editor, a virus
scanner) waits for that handle to close, up to LOCK_TIMEOUT_S, instead of giving up after a fixed count.
"""

from __future__ import annotations

import contextlib
import logging.handlers
import os
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_FOLDER = 0o700
NORMAL_FILE = None
"""`mode=NORMAL_FILE`: what any new file of this user gets (0666 less the umask), for files that are not secret."""
LOCK_TIMEOUT_S = 10.0

_IS_WINDOWS = sys.platform == "win32"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_BINARY = getattr(os, "O_BINARY", 0)
_held = threading.local()
"""`_held.paths`: the lock files this thread holds, so a read inside a locked read-modify-write does not wait
for itself (Windows byte-range locks belong to a handle, not a process)."""


class FileTooLargeError(OSError):
    """A file is bigger than what we are willing to read into memory."""


class LockTimeoutError(OSError):
    """Another process held a file's lock for longer than we wait."""


def make_private_folder(folder: Path | str) -> Path:
    """Create `folder` and any missing parents as 0700; folders that already exist are left as they are."""
    folder = Path(folder)
    missing: list[Path] = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it in between: fine
            path.mkdir(mode=PRIVATE_FOLDER)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder")
    return folder


def check_writable(folder: Path | str) -> None:
    """Raise OSError (its strerror says why) unless a new file can be made in `folder`: a fresh temporary file is
    made and removed at once, so a folder that only looks writable (a read-only mount, an ACL) is found too."""
    fd, name = tempfile.mkstemp(dir=folder, prefix=".dotocr-check-", suffix=".tmp")
    os.close(fd)
    os.unlink(name)


def write_atomic(path: Path | str, data: bytes | str, *, mode: int | None = PRIVATE_FILE, overwrite: bool = True,
                 encoding: str = "utf-8") -> Path:
    """Replace `path` with `data` in one step; a reader sees the old content or the new, never a mix.

    A symlink at `path` itself is replaced, not followed. With `overwrite=False` an existing `path` is left
    alone and FileExistsError raised (atomically where the file system has hard links or, on Windows, by
    rename). `mode=NORMAL_FILE` for files that are not private.
    """
    payload = data.encode(encoding) if isinstance(data, str) else bytes(data)
    with atomic_path(path, mode=mode, overwrite=overwrite) as tmp, open(tmp, "wb") as handle:
        handle.write(payload)
    return Path(path)


@contextlib.contextmanager
def atomic_path(path: Path | str, *, mode: int | None = PRIVATE_FILE, overwrite: bool = True,
                keep: bool = True) -> Iterator[Path]:
    """A fresh temporary file beside `path`, for writers that need a file name (the GGUF writer, llama.cpp's
    quantiser, an image encoder). When the block ends without an error, the file is flushed to disk, given
    `mode` and renamed onto `path` (if `keep`); otherwise it is removed. `overwrite` as for `write_atomic`.

    The temporary file has a unique name (tempfile.mkstemp: O_CREAT|O_EXCL, and on POSIX O_NOFOLLOW), so a
    planted file or symlink is never written through; missing folders are created 0700.
    """
    path = Path(path)
    folder = make_private_folder(path.parent)
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if keep:
            _settle(tmp, 0o666 & ~_umask() if mode is None else mode)
            if overwrite:
                _replace(tmp, path)
            else:
                _place_new(tmp, path)
            _sync_folder(folder)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _settle(tmp: Path, mode: int) -> None:
    """The finished temporary file's mode set and its bytes on disk before it takes the target's name."""
    fd = os.open(tmp, os.O_RDWR | _NOFOLLOW | _BINARY)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    if not hasattr(os, "fchmod"):
        os.chmod(tmp, mode)


def _umask() -> int:
    """This process's umask, read without changing it where the system allows (Linux's /proc)."""
    with contextlib.suppress(OSError, ValueError, StopIteration), open("/proc/self/status", encoding="ascii") as status:
        return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    current = os.umask(0o077)  # elsewhere: set and restore (a file made meanwhile is only more private)
    os.umask(current)
    return current


def _replace(tmp: Path, path: Path, timeout: float | None = None) -> None:
    """os.replace. On Windows an open handle to the target (or to the fresh temporary file: a virus scanner)
    makes it fail with a sharing violation until that handle closes, so it is retried until the handle is
    gone, for as long as a lock is waited for; then one sentence says what kept the file."""
    deadline = time.monotonic() + (LOCK_TIMEOUT_S if timeout is None else timeout)
    pause = 0.002
    while True:
        try:
            os.replace(tmp, path)
            return
        except PermissionError as exc:
            if not _IS_WINDOWS:
                raise
            if time.monotonic() >= deadline:
                raise PermissionError(exc.errno, f"another program kept {path.name} open for longer than "
                                      f"{LOCK_TIMEOUT_S if timeout is None else timeout:g} s", str(path)) from None
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _place_new(tmp: Path, path: Path) -> None:
    """Move `tmp` to `path` only if nothing is there yet, without a window in which another file could
    be replaced."""
    if _IS_WINDOWS:
        os.rename(tmp, path)  # Windows' rename never replaces: FileExistsError if the target exists
        return
    try:
        os.link(tmp, path)  # fails with FileExistsError if anything (file, link, folder) has the name
    except FileExistsError:
        raise
    except OSError:  # no hard links here (FAT, some network shares): check, then rename
        if os.path.lexists(path):
            raise FileExistsError(17, "File exists", str(path)) from None
        os.rename(tmp, path)
        return
    tmp.unlink()


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); Windows cannot open a folder for fsync, and needs not."""
    if _IS_WINDOWS:
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_limited(path: Path | str, max_bytes: int, *, writers_lock: bool = False) -> bytes:
    """The file's bytes, or FileTooLargeError before reading anything when it is over `max_bytes`.

    `writers_lock=True` for a file whose writers take `locked(path)`: on Windows the read then holds that lock,
    so it never keeps the file open while one of our writers renames over it (see the module's docstring).
    If the lock cannot be had (a read-only folder, a writer stuck for LOCK_TIMEOUT_S) the file is read anyway.
    """
    if not (writers_lock and _IS_WINDOWS) or _holds_lock(path) or not os.path.isfile(path):
        return _read_limited(path, max_bytes)
    try:
        with locked(path):
            return _read_limited(path, max_bytes)
    except (FileNotFoundError, FileTooLargeError):
        raise
    except OSError:  # the lock file could not be made or locked: a plain read, which a writer waits out
        return _read_limited(path, max_bytes)


def _read_limited(path: Path | str, max_bytes: int) -> bytes:
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > max_bytes:
            raise FileTooLargeError(f"{path} is {size:,} bytes, more than the {max_bytes:,} allowed")
        data = handle.read(max_bytes + 1)  # a file that grew since fstat is still caught
    if len(data) > max_bytes:
        raise FileTooLargeError(f"{path} is more than the {max_bytes:,} bytes allowed")
    return data


@contextlib.contextmanager
def locked(path: Path | str, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the cross-process lock for `path` (a separate `<name>.lock` file beside it) for a
    read-modify-write. The lock is released by the operating system if the process dies.
    Raises LockTimeoutError after `timeout` seconds."""
    path = Path(path)
    make_private_folder(path.parent)
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _BINARY, PRIVATE_FILE)
    try:
        deadline = time.monotonic() + timeout
        while not _try_lock(fd):
            if time.monotonic() >= deadline:
                raise LockTimeoutError(f"{lock_path} stayed locked by another process for {timeout:g} s")
            time.sleep(0.01)
        held = _held_paths()
        held.add(str(lock_path))
        try:
            yield
        finally:
            held.discard(str(lock_path))
            _unlock(fd)
    finally:
        os.close(fd)


def _held_paths() -> set[str]:
    if not hasattr(_held, "paths"):
        _held.paths = set()
    return _held.paths


def _holds_lock(path: Path | str) -> bool:
    """Whether this thread is inside `locked(path)` now."""
    path = Path(path)
    return str(path.with_name(path.name + ".lock")) in _held_paths()


def hold_lock(path: Path | str) -> int | None:
    """Take the exclusive lock on `path` without waiting and keep it until the returned descriptor is closed
    (or the process ends); None when another process holds it. For "only one of us runs" checks."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _BINARY, PRIVATE_FILE)
    if _try_lock(fd):
        return fd
    os.close(fd)
    return None


def _try_lock(fd: int) -> bool:
    if _IS_WINDOWS:
        import msvcrt

        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock(fd: int) -> None:
    if _IS_WINDOWS:
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        with contextlib.suppress(OSError):
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)


def move_aside(path: Path | str) -> Path | None:
    """Rename a damaged file to `<name>.broken-<YYYYmmdd-HHMMSS>` (then -2, -3, ...) so nothing of it is
    lost and a fresh file can take its place. Never replaces another file. None if it could not be moved."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for number in range(1, 1000):
        candidate = path.with_name(f"{path.name}.broken-{stamp}" + (f"-{number}" if number > 1 else ""))
        try:
            if _IS_WINDOWS:
                os.rename(path, candidate)  # never replaces on Windows
            else:
                os.link(path, candidate)  # fails if the name is taken; a rename would replace
                path.unlink()
            return candidate
        except FileExistsError:
            continue
        except OSError:
            return None
    return None


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log that only its owner can read: log lines hold OCR text (toasts show it)."""

    def _open(self):  # type: ignore[no-untyped-def]  # logging's own signature
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW | _BINARY,
                     PRIVATE_FILE)
        if hasattr(os, "fchmod"):
            os.fchmod(fd, PRIVATE_FILE)  # a log made 0644 by an older version is closed up too
        return open(fd, self.mode, encoding=self.encoding, errors=self.errors)  # noqa: SIM115

    def doRollover(self) -> None:  # noqa: N802  # logging's name
        super().doRollover()
        _close_up_rotations(self.baseFilename, self.backupCount)


def private_log_handler(path: Path | str, max_bytes: int = 1_000_000, backups: int = 1) -> logging.Handler:
    """The tray's log file: in a 0700 folder, the file and its rotations 0600."""
    path = Path(path)
    make_private_folder(path.parent)
    handler = PrivateRotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
    _close_up_rotations(str(path), backups)  # rotations left readable by an older version
    return handler


def _close_up_rotations(base: str, backups: int) -> None:
    for number in range(1, backups + 1):
        rotated = f"{base}.{number}"
        with contextlib.suppress(OSError):
            if stat.S_ISREG(os.lstat(rotated).st_mode):  # a planted symlink is not followed
                os.chmod(rotated, PRIVATE_FILE)
