"""History of OCR results: bounded, newest first, persisted atomically, a damaged file kept aside."""

from __future__ import annotations

import json
import logging
import shutil
import stat
import sys
import threading
import time
from pathlib import Path

import pytest

from dotocr.config import data_dir
from dotocr.tray.history import MAX_BYTES, History
from tests.windows_facts import others_allowed, running_under_wine

pytestmark = pytest.mark.timeout(30)
REPO = Path(__file__).resolve().parents[1]


def test_newest_first_and_bounded(tmp_path):
    history = History(tmp_path / "history.json", size=3)
    for word in ["one", "two", "three", "four"]:
        history.add(word, prompt="text", when=1000.0)
    assert [e.text for e in history.items()] == ["four", "three", "two"]
    assert history.items()[0].chars == 4 and history.items()[0].prompt == "text"


def test_persists_across_instances_with_all_fields(tmp_path):
    path = tmp_path / "history.json"
    first = History(path, size=5)
    first.add("héllo wörld 🎉", prompt="layout", when=1234.5)
    first.add("second")
    again = History(path, size=5)
    assert [e.text for e in again.items()] == ["second", "héllo wörld 🎉"]
    entry = again.items()[1]
    assert (entry.time, entry.prompt, entry.chars) == (1234.5, "layout", len("héllo wörld 🎉"))


def test_default_path_is_in_the_data_dir():
    history = History(size=2)
    history.add("saved")
    assert history.path == data_dir() / "history.json"
    assert json.loads(history.path.read_text(encoding="utf-8"))["items"][0]["text"] == "saved"


def test_blank_text_is_not_recorded_and_a_repeat_moves_to_the_top(tmp_path):
    history = History(tmp_path / "h.json", size=5)
    assert history.add("   \n") is None
    history.add("a")
    history.add("b")
    history.add("a")
    assert [e.text for e in history.items()] == ["a", "b"]


def test_resize_trims_and_persists(tmp_path):
    path = tmp_path / "h.json"
    history = History(path, size=5)
    for n in range(5):
        history.add(f"item {n}")
    history.resize(2)
    assert [e.text for e in History(path, size=5).items()] == ["item 4", "item 3"]
    history.resize(0)
    assert history.add("ignored") is None and history.items() == []
    history.resize(3)
    history.add("x")
    assert [e.text for e in History(path, size=3).items()] == ["x"]


def test_a_smaller_size_applies_to_a_loaded_file(tmp_path):
    path = tmp_path / "h.json"
    big = History(path, size=10)
    for n in range(6):
        big.add(str(n))
    assert [e.text for e in History(path, size=2).items()] == ["5", "4"]


DAMAGED = {
    "not json": b"{not json",
    "items not a list": b'{"items": 5}',
    "a list": b"[1, 2]",
    "text not a string": b'{"items": [{"text": 3, "time": 1}]}',
    "no text": b'{"items": [{"time": 1}]}',
    "time a string": b'{"items": [{"text": "a", "time": "yesterday"}]}',
    "time too large": b'{"items": [{"text": "a", "time": 1' + b"0" * 400 + b"}]}",
    "5000-digit number": b'{"items": [{"text": "a", "time": ' + b"9" * 5000 + b"}]}",
    "invalid UTF-8": b'{"items": [{"text": "\xff\xfe caf\xe9", "time": 1}]}',
    "UTF-16": '{"version": 1, "items": [{"text": "a", "time": 1}]}'.encode("utf-16"),
    "5000-deep nesting": b'{"items": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    "5000-deep objects": b'{"items": [' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"]}",
    "null bytes": b"\0" * 100,
}


@pytest.mark.parametrize("kind", list(DAMAGED))
def test_damaged_file_is_moved_aside_not_lost_and_the_tray_goes_on(tmp_path, kind, caplog):
    path = tmp_path / "history.json"
    path.write_bytes(DAMAGED[kind])
    with caplog.at_level(logging.WARNING, logger="dotocr.tray.history"):
        history = History(path, size=5)
    assert history.items() == []
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("history.json.broken-")]
    assert len(aside) == 1 and aside[0].read_bytes() == DAMAGED[kind]
    assert history.warning and str(path) in history.warning and str(aside[0]) in history.warning
    assert "\n" not in history.warning and len(history.warning) - len(str(path)) - len(str(aside[0])) < 200
    assert [r.getMessage() for r in caplog.records] == [history.warning]  # one log sentence, no traceback
    history.add("fresh")
    assert [e.text for e in History(path, size=5).items()] == ["fresh"]
    assert aside[0].read_bytes() == DAMAGED[kind]


def test_a_huge_file_is_set_aside_without_being_read(tmp_path):
    path = tmp_path / "history.json"
    with open(path, "wb") as handle:
        handle.truncate(MAX_BYTES + 1)  # sparse: no time spent writing it
    history = History(path)
    assert history.items() == [] and "larger than" in (history.warning or "")
    assert not path.exists()


def test_a_second_damaged_file_does_not_overwrite_the_first(tmp_path):
    path = tmp_path / "history.json"
    path.write_text("broken one", encoding="utf-8")
    History(path)
    path.write_text("broken two", encoding="utf-8")
    History(path)
    aside = sorted(p.read_text() for p in tmp_path.iterdir() if ".broken-" in p.name)
    assert aside == ["broken one", "broken two"]


def test_a_lone_surrogate_in_a_result_does_not_stop_saving(tmp_path):
    path = tmp_path / "history.json"
    History(path).add("bad \ud800 char")
    assert [e.text for e in History(path).items()] == ["bad ? char"]


def test_writes_leave_no_temporary_file(tmp_path):
    path = tmp_path / "sub" / "history.json"
    History(path).add("secret on screen")
    History(path).add("another")
    assert sorted(p.name for p in path.parent.iterdir()) == ["history.json"]


@pytest.mark.skipif(running_under_wine(), reason="Wine limitation: Wine makes a file's ACL up from its Unix mode "
                    "bits (Everyone may read) and keeps no DACL that is set, so it cannot show Windows' privacy")
def test_writes_are_private(tmp_path):
    path = tmp_path / "sub" / "history.json"
    History(path).add("secret on screen")
    if sys.platform == "win32":  # Windows: the ACL inherited from the user's profile (tmp_path is under it)
        assert others_allowed(path) == []
    else:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_concurrent_adds_keep_the_file_consistent(tmp_path):
    path = tmp_path / "h.json"
    history = History(path, size=50)
    def add_ten(n: int) -> None:
        for i in range(10):
            history.add(f"{n}-{i}")

    threads = [threading.Thread(target=add_ten, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(history.items()) == 40
    assert [e.text for e in History(path, size=50).items()] == [e.text for e in history.items()]


def test_entry_label_is_one_short_line(tmp_path):
    history = History(tmp_path / "h.json")
    entry = history.add("first line\nsecond line " + "word " * 20)
    assert "\n" not in entry.label and len(entry.label) <= 40 and entry.label.startswith("first line second")


@pytest.mark.timeout(120)
@pytest.mark.skipif(sys.platform != "linux" or shutil.which("Xvfb") is None, reason="needs Xvfb")
def test_the_real_tray_starts_with_a_broken_history_and_a_broken_settings_file(tmp_path, dots_tiny):
    """`python -m dotocr.tray` under Xvfb with a UTF-16 history and 5000-deep settings: it starts, answers a
    second launch, says one sentence about each file, sets the history aside and leaves the settings alone."""
    import os
    import signal
    import subprocess

    from tests.xvfb import XvfbServer

    data, config = tmp_path / "data", tmp_path / "settings.toml"
    data.mkdir()
    history_bytes = DAMAGED["UTF-16"]
    (data / "history.json").write_bytes(history_bytes)
    settings_bytes = b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n"
    config.write_bytes(settings_bytes)
    flags = ["--model", str(dots_tiny), "--device", "cpu", "--precision", "fp32", "--hotkey", "ctrl+alt+shift+F9"]
    err_file = tmp_path / "stderr.txt"
    with XvfbServer(320, 240), err_file.open("w") as err:
        env = dict(os.environ, DOTOCR_DATA_DIR=str(data), DOTOCR_CONFIG=str(config), PYTHONPATH=str(REPO))
        tray = subprocess.Popen([sys.executable, "-m", "dotocr.tray", *flags], env=env, stdout=subprocess.DEVNULL,
                                stderr=err)
        try:
            log_file = data / "tray.log"
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not (
                    log_file.exists() and "tray started" in log_file.read_text(encoding="utf-8")):
                assert tray.poll() is None, err_file.read_text()
                time.sleep(0.2)
            code = "import sys; from dotocr.tray.single_instance import send_to_running; " \
                   "sys.exit(0 if send_to_running('hello') else 1)"
            second = subprocess.run([sys.executable, "-c", code], env=env, timeout=30)
            assert second.returncode == 0
        finally:
            tray.send_signal(signal.SIGTERM)
            try:
                tray.wait(30)
            except subprocess.TimeoutExpired:
                tray.kill()
                tray.wait()
    stderr = err_file.read_text()
    log_text = (data / "tray.log").read_text(encoding="utf-8")
    assert "Traceback" not in stderr and "Traceback" not in log_text, stderr
    warnings = [line for line in log_text.splitlines() if " WARNING " in line]
    assert len([line for line in warnings if f"The settings file {config}" in line]) == 1
    assert len([line for line in warnings if f"The history file {data / 'history.json'}" in line]) == 1
    assert config.read_bytes() == settings_bytes
    aside = [p for p in data.iterdir() if p.name.startswith("history.json.broken-")]
    assert len(aside) == 1 and aside[0].read_bytes() == history_bytes
