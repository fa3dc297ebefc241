"""The one file writer: unique temporary files, no symlink following, private modes, a cross-process lock."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dotocr.storage import (
    FileTooLargeError,
    LockTimeoutError,
    locked,
    make_private_folder,
    move_aside,
    private_log_handler,
    read_limited,
    write_atomic,
)

pytestmark = pytest.mark.timeout(60)
REPO = Path(__file__).resolve().parents[1]
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="Windows fact: privacy is an ACL there, not POSIX "
                                "modes, and a symlink needs a privilege a normal user lacks")


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@posix_only
def test_planted_temporary_names_and_symlinks_are_never_written_through(tmp_path):
    """Every name an older version used for its temporary file, planted as a symlink to a victim file,
    is left alone: the victim keeps its bytes and the target gets the new content."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "settings.toml"
    for name in ("settings.toml.tmp", "settings.tmp", "settings.toml.part", ".settings.toml.tmp"):
        (tmp_path / name).symlink_to(victim)
    write_atomic(target, "fresh = 1\n")
    assert victim.read_text() == "precious"
    assert target.read_text() == "fresh = 1\n" and not target.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.is_symlink()) == ["settings.toml", "victim.txt"]


@posix_only
def test_a_symlink_at_the_target_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "out.txt"
    target.symlink_to(victim)
    write_atomic(target, "new")
    assert victim.read_text() == "precious" and target.read_text() == "new" and not target.is_symlink()


@posix_only
def test_files_are_private_and_new_folders_owner_only(tmp_path):
    target = tmp_path / "a" / "b" / "history.json"
    old_umask = os.umask(0)  # the most permissive umask: the modes must still be ours
    try:
        write_atomic(target, b"{}")
    finally:
        os.umask(old_umask)
    assert mode_of(target) == 0o600
    assert mode_of(tmp_path / "a") == 0o700 and mode_of(tmp_path / "a" / "b") == 0o700
    old_umask = os.umask(0o027)
    try:
        write_atomic(tmp_path / "public.desktop", "x", mode=None)  # a normal file: the umask decides
    finally:
        os.umask(old_umask)
    assert mode_of(tmp_path / "public.desktop") == 0o640


def test_overwrite_false_never_replaces_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("someone else's")
    with pytest.raises(FileExistsError):
        write_atomic(target, "ours", overwrite=False)
    assert target.read_text() == "someone else's"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    write_atomic(tmp_path / "b.txt", "ours", overwrite=False)
    assert (tmp_path / "b.txt").read_text() == "ours"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "keep.txt"
    target.write_text("old")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)  # a fault injected after the temporary file exists
    with pytest.raises(OSError):
        write_atomic(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_read_limited_refuses_a_huge_file_without_reading_it(tmp_path):
    huge = tmp_path / "huge"
    with open(huge, "wb") as handle:
        handle.truncate(50 * 1024**3)  # sparse: 50 GB that would take minutes to read
    started = time.monotonic()
    with pytest.raises(FileTooLargeError):
        read_limited(huge, 1_000_000)
    assert time.monotonic() - started < 1.0
    (tmp_path / "small").write_bytes(b"abc")
    assert read_limited(tmp_path / "small", 3) == b"abc"


def test_the_lock_excludes_another_process_and_times_out(tmp_path):
    target = tmp_path / "settings.toml"
    code = ("import sys, time; from dotocr.storage import locked\n"
            "with locked(sys.argv[1]):\n    print('held', flush=True); time.sleep(3)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(LockTimeoutError), locked(target, timeout=0.3):
            pass
        assert 0.25 < time.monotonic() - started < 2.0
        with locked(target, timeout=10):  # only once the holder let go, about 3 s after taking it
            assert time.monotonic() - started > 1.5
    finally:
        holder.kill()
        holder.wait(10)


def test_the_lock_excludes_another_thread(tmp_path):
    target = tmp_path / "f"
    inside = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with locked(target):
            inside.set()
            release.wait(5)

    thread = threading.Thread(target=hold)
    thread.start()
    assert inside.wait(5)
    with pytest.raises(LockTimeoutError), locked(target, timeout=0.2):
        pass
    release.set()
    thread.join(5)


def test_move_aside_keeps_every_broken_copy(tmp_path):
    path = tmp_path / "history.json"
    first_aside = []
    for content in ("one", "two"):
        path.write_text(content)
        aside = move_aside(path)
        assert aside is not None and not path.exists()
        first_aside.append(aside)
    assert first_aside[0] != first_aside[1]
    assert sorted(p.read_text() for p in first_aside) == ["one", "two"]
    assert all(".broken-" in p.name for p in first_aside)


@posix_only
def test_the_log_and_its_rotations_are_private(tmp_path):
    folder = tmp_path / "data"
    old = folder / "tray.log.1"
    folder.mkdir()
    old.write_text("older version, world-readable")
    old.chmod(0o644)
    handler = private_log_handler(folder / "tray.log", max_bytes=200, backups=2)
    logger = logging.getLogger("test_storage.private_log")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for number in range(20):
            logger.warning("OCR text that is the user's alone, line %d", number)
    finally:
        logger.removeHandler(handler)
        handler.close()
    logs = sorted(folder.glob("tray.log*"))
    assert [p.name for p in logs] == ["tray.log", "tray.log.1", "tray.log.2"]
    assert all(mode_of(p) == 0o600 for p in logs), {p.name: oct(mode_of(p)) for p in logs}


def test_make_private_folder_refuses_a_file(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError):
        make_private_folder(tmp_path / "file")


@posix_only
def test_the_tray_log_file_is_private(tmp_path):
    """The tray's own logging set-up (in a child: it configures the root logger) makes a 0600 log in a 0700
    folder: toasts, and so OCR text, end up in it."""
    data = tmp_path / "data"
    code = ("import logging; from dotocr.tray.app import _setup_logging; _setup_logging(False); "
            "logging.getLogger('dotocr.tray').warning('text from the screen')")
    env = dict(os.environ, PYTHONPATH=str(REPO), DOTOCR_DATA_DIR=str(data))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    log_file = data / "tray.log"
    assert "text from the screen" in log_file.read_text(encoding="utf-8")
    assert mode_of(log_file) == 0o600 and mode_of(data) == 0o700


def _data_writers() -> dict[str, object]:
    """Everything that may be first to create the data folder, each run as it runs on first use."""
    from dotocr.local_secret import load_or_create_secret
    from dotocr.tray.history import History
    from dotocr.tray.single_instance import load_authkey

    def gguf() -> None:
        pytest.importorskip("gguf")
        from dotocr.engine.gguf.convert import ensure_gguf
        from tests.conftest import golden_dir

        ensure_gguf(golden_dir(), "f16", progress=False)

    def log() -> None:
        from dotocr.config import data_dir

        private_log_handler(data_dir() / "tray.log").close()

    return {"secret": load_or_create_secret, "history": lambda: History(None, 5).add("text"),
            "tray key": load_authkey, "gguf cache (convert-gguf)": gguf, "log": log}


@posix_only
@pytest.mark.parametrize("writer", sorted(_data_writers()))
def test_the_data_folder_is_0700_whoever_creates_it(tmp_path, monkeypatch, writer):
    """Issue 18: `dotocr convert-gguf` run first made the data folder 0755; history, logs and the server secret
    live in it later."""
    data = tmp_path / "home" / "share" / "dotocr"
    monkeypatch.setenv("DOTOCR_DATA_DIR", str(data))
    previous = os.umask(0o022)
    try:
        _data_writers()[writer]()
    finally:
        os.umask(previous)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
