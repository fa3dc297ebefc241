"""The settings object and its TOML file."""

from __future__ import annotations

import argparse

import pytest

from dotocr.config import (
    Settings,
    SettingsError,
    SettingsFile,
    add_engine_arguments,
    settings_from_args,
    tomllib,  # the stdlib module, or tomli on 3.10
)


def test_defaults_match_the_product():
    s = Settings()
    assert (s.model, s.device, s.precision, s.max_image_size) == ("rednote-hilab/dots.ocr", "auto", "auto", 1024)
    assert s.engine == "local" and s.history_size == 20 and not s.api_enabled


def test_round_trip(tmp_path):
    store = SettingsFile(tmp_path / "settings.toml")
    changed = Settings(precision="4bit", max_image_size=1536, hotkey="ctrl+alt+q", output_format="markdown")
    assert store.save(changed)
    assert SettingsFile(tmp_path / "settings.toml").load() == changed


def test_broken_file_names_the_line_and_is_never_overwritten(tmp_path):
    path = tmp_path / "settings.toml"
    text = 'device = "cpu"\nmax_image_size = = 12\n'
    path.write_text(text)
    store = SettingsFile(path)
    settings = store.load()
    assert settings == Settings()
    assert store.broken and len(store.problems) == 1
    assert str(path) in store.problems[0] and "line 2" in store.problems[0]
    assert store.save(settings.replace(precision="fp16")) is False
    assert path.read_text() == text


def test_bad_values_fall_back_one_by_one(tmp_path):
    path = tmp_path / "settings.toml"
    path.write_text('precision = "8bit"\nmax_image_size = 2048\ncolour = "blue"\nhistory_size = -1\n')
    store = SettingsFile(path)
    settings = store.load()
    assert settings.precision == "auto" and settings.max_image_size == 2048 and settings.history_size == 20
    assert any("precision" in p and "8bit" in p for p in store.problems)
    assert any("colour" in p for p in store.problems)
    assert any("history_size" in p for p in store.problems)
    assert not store.broken


def test_menu_changes_keep_everything_else_in_the_file(tmp_path):
    """A change from the menu touches its own keys only: odd values, unknown keys and later edits survive."""
    path = tmp_path / "settings.toml"
    path.write_text('precision = "8bit"\ncolour = "blue"\nmax_image_size = 2048\n')
    store = SettingsFile(path)
    store.load()
    path.write_text(path.read_text() + 'hotkey = "ctrl+alt+q"\n')  # edited by hand after start
    assert store.update({"output_format": "markdown", "prompt": "layout"})
    saved = tomllib.loads(path.read_text())
    assert saved == {"precision": "8bit", "colour": "blue", "max_image_size": 2048, "hotkey": "ctrl+alt+q",
                     "output_format": "markdown", "prompt": "layout"}


def test_update_refuses_a_file_broken_since_it_was_read(tmp_path):
    path = tmp_path / "settings.toml"
    path.write_text('device = "cpu"\n')
    store = SettingsFile(path)
    store.load()
    path.write_text("device = = \n")
    assert store.update({"precision": "fp16"}) is False
    assert path.read_text() == "device = = \n"


def test_an_unwritable_folder_is_reported_not_raised(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    store = SettingsFile(blocker / "settings.toml")
    assert store.update({"precision": "fp16"}) is False
    assert any("could not be written" in p for p in store.problems)


def test_invalid_values_raise_a_clear_error():
    with pytest.raises(SettingsError, match="device"):
        Settings(device="tpu")
    with pytest.raises(SettingsError, match="max_image_size"):
        Settings(max_image_size=True)
    with pytest.raises(SettingsError, match="api_port"):
        Settings(api_port=70000)


def test_flags_override_only_what_was_given():
    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    base = Settings(precision="4bit", max_new_tokens=100)
    args = parser.parse_args(["--max-image-size", "1024", "--device", "cpu"])
    merged = settings_from_args(args, base)
    assert (merged.max_image_size, merged.device, merged.precision, merged.max_new_tokens) == (1024, "cpu", "4bit", 100)


def test_flag_values_are_checked():
    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--max-image-size", "10"])
    assert parser.parse_args(["--max-image-size", "0"]).max_image_size == 0  # 0: no cap
    assert Settings(max_image_size=0).max_image_size == 0
