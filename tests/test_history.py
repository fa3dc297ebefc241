"""History of OCR results: bounded, newest first, persisted atomically, a damaged file kept aside."""

from __future__ import annotations

import json
import logging
import stat
import threading

import pytest

from dotocr.config import data_dir
from dotocr.tray.history import MAX_BYTES, History

pytestmark = pytest.mark.timeout(30)


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


def test_writes_are_private_and_leave_no_temporary_file(tmp_path):
    path = tmp_path / "sub" / "history.json"
    History(path).add("secret on screen")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["history.json"]


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
