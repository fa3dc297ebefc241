"""The settings object and its TOML file."""

from __future__ import annotations

import argparse
import stat
import sys
from pathlib import Path

import pytest

from dotocr.config import (
    ENGINE_FLAGS,
    Settings,
    SettingsError,
    SettingsFile,
    add_engine_arguments,
    declaration,
    environment_values,
    environment_variable,
    overrides_from_args,
    setting_sources,
    settings_from_args,
    tomllib,  # the stdlib module, or tomli on 3.10
)

REPO = Path(__file__).resolve().parents[1]


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


# -- one declaration for validation and flags -----------------------------------------------------------

def test_every_flag_comes_from_the_declaration():
    """The engine flags carry the declared choices and ranges; nothing is spelled twice."""
    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    actions = {a.dest: a for a in parser._actions}
    for name in ENGINE_FLAGS:
        declared = declaration(name)
        action = actions[name]
        assert action.option_strings == [declared.flag] and action.default is None
        assert declared.help in action.help
        if declared.choices:
            assert tuple(action.choices) == declared.choices
    top = declaration("max_image_size").maximum
    assert parser.parse_args(["--max-image-size", str(top)]).max_image_size == top
    with pytest.raises(SystemExit):
        parser.parse_args(["--max-image-size", str(top + 1)])
    with pytest.raises(SettingsError, match="max_image_size"):
        Settings(max_image_size=top + 1)


def test_server_flag_makes_that_server_the_engine():
    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    merged = settings_from_args(parser.parse_args(["--server", "http://127.0.0.1:11434", "--remote-model", "d:q8"]),
                                Settings())
    assert (merged.engine, merged.remote_url, merged.remote_model) == ("remote", "http://127.0.0.1:11434", "d:q8")
    assert settings_from_args(parser.parse_args(["--remote-model", "d:q8"]), Settings()).engine == "local"
    from dotocr.tray.app import build_parser  # dotocr-tray --server http://127.0.0.1:11434, as the docs say

    tray = build_parser().parse_args(["--server", "http://127.0.0.1:11434"])
    assert overrides_from_args(tray) == {"remote_url": "http://127.0.0.1:11434", "engine": "remote"}


# -- DOTOCR_<KEY> environment variables: above the file, below the flags --------------------------------------

def test_environment_variables_set_any_key_above_the_file_and_below_the_flags():
    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    environ = {"DOTOCR_PRECISION": "4bit", "DOTOCR_DEVICE": "cpu", "DOTOCR_MAX_IMAGE_SIZE": "1536",
               "DOTOCR_API_ENABLED": "yes", "DOTOCR_CONFIG": "/elsewhere.toml", "DOTOCR_UNKNOWN": "x"}
    base = Settings(precision="fp16", hotkey="ctrl+alt+q")  # what the file holds
    overrides = overrides_from_args(parser.parse_args(["--device", "cuda"]), environ=environ)
    merged = base.replace(**overrides)
    assert (merged.precision, merged.max_image_size, merged.api_enabled) == ("4bit", 1536, True)  # environment
    assert merged.device == "cuda"  # the flag wins over DOTOCR_DEVICE
    assert merged.hotkey == "ctrl+alt+q"  # the file's, untouched
    assert environment_variable("max_image_size") == "DOTOCR_MAX_IMAGE_SIZE"


@pytest.mark.parametrize(("variable", "value", "words"), [
    ("DOTOCR_PRECISION", "8bit", "precision = '8bit' is not one of"),
    ("DOTOCR_MAX_IMAGE_SIZE", "big", "must be a whole number"),
    ("DOTOCR_MAX_IMAGE_SIZE", "9" * 40, "must be a whole number"),
    ("DOTOCR_API_PORT", "70000", "from 1 to 65535"),
    ("DOTOCR_API_ENABLED", "maybe", "must be true or false"),
])
def test_a_bad_environment_value_is_one_sentence_and_ignored(variable, value, words):
    problems: list[str] = []
    values, sources = environment_values({variable: value, "DOTOCR_DECODER": "torch"}, problems)
    assert values == {"decoder": "torch"} and sources == {"decoder": "environment DOTOCR_DECODER"}
    assert len(problems) == 1 and problems[0].startswith(f"The environment variable {variable}: ")
    assert words in problems[0] and problems[0].endswith("It is ignored.")


def test_an_empty_environment_variable_sets_nothing():
    assert environment_values({"DOTOCR_PRECISION": "", "DOTOCR_MODEL": "  "}) == ({}, {})


def test_where_each_value_comes_from(tmp_path):
    store = SettingsFile(tmp_path / "settings.toml")
    store.path.write_text('hotkey = "ctrl+alt+q"\nprecision = "fp16"\n', encoding="utf-8")
    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    sources = setting_sources(parser.parse_args(["--server", "http://127.0.0.1:9"]), store,
                              environ={"DOTOCR_PRECISION": "bf16"})
    assert sources["hotkey"] == "settings file" and sources["model"] == "default"
    assert sources["precision"] == "environment DOTOCR_PRECISION"
    assert sources["remote_url"] == sources["engine"] == "flag --server"


def test_decoder_and_gguf_type_settings_and_flags():
    assert Settings().decoder == "auto" and Settings().gguf_type == ""
    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    args = parser.parse_args(["--decoder", "llamacpp", "--gguf-type", "q4_k_m"])
    merged = settings_from_args(args, Settings())
    assert (merged.decoder, merged.gguf_type) == ("llamacpp", "q4_k_m")
    for bad in (["--decoder", "vllm"], ["--gguf-type", "q2"], ["--gguf-type", ""]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
    with pytest.raises(SettingsError, match="decoder"):
        Settings(decoder="vllm")
    with pytest.raises(SettingsError, match=r"gguf_type = 'q2' is not one of f32, .*, or '' \(chosen by the"):
        Settings(gguf_type="q2")
    assert Settings(gguf_type="").gguf_type == ""  # the declared special value: pick by precision


def test_types_are_checked_for_every_setting(tmp_path):
    path = tmp_path / "settings.toml"
    path.write_text('hotkey = 5\napi_enabled = "yes"\nremote_url = ["x"]\nmodel = "  "\n')
    store = SettingsFile(path)
    assert store.load() == Settings()
    assert len(store.problems) == 4
    assert all(str(path) in p for p in store.problems)


# -- corrupt files: one sentence, defaults, never overwritten --------------------------------------------

CORRUPT = {
    "invalid UTF-8": b'device = "cpu"\nhotkey = "\xff\xfe\xfa"\n',
    "UTF-16": 'device = "cpu"\n'.encode("utf-16"),
    "5000-digit integer": b"max_new_tokens = " + b"9" * 5000 + b"\n",
    "5000-deep nesting": b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n",
    "5000-deep tables": b"x = " + b"{a = " * 5000 + b"1" + b"}" * 5000 + b"\n",
    "huge": b"# " + b"x" * 2_000_000 + b"\n",
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", list(CORRUPT))
def test_a_corrupt_file_gives_one_sentence_and_is_never_overwritten(tmp_path, kind):
    path = tmp_path / "settings.toml"
    path.write_bytes(CORRUPT[kind])
    store = SettingsFile(path)
    assert store.load() == Settings()
    assert store.broken and len(store.problems) == 1
    sentence = store.problems[0]
    assert sentence.startswith(f"The settings file {path}") and "fix or delete it" in sentence
    assert len(sentence) < 300 and "\n" not in sentence
    assert store.save(Settings(precision="fp16")) is False
    assert store.update({"precision": "fp16"}) is False
    assert path.read_bytes() == CORRUPT[kind]


def test_a_file_with_notepads_utf8_signature_is_read(tmp_path):
    path = tmp_path / "settings.toml"
    path.write_bytes(b'\xef\xbb\xbfdevice = "cpu"\n')
    store = SettingsFile(path)
    assert store.load().device == "cpu" and not store.problems


@pytest.mark.timeout(120)
def test_every_front_end_path_gives_one_sentence_not_a_traceback(tmp_path):
    """`dotocr ocr` and `dotocr-serve` read the same broken file: one warning line naming it, no traceback."""
    import os
    import socket
    import subprocess
    import sys

    path = tmp_path / "settings.toml"
    path.write_bytes(CORRUPT["5000-deep nesting"])
    env = dict(os.environ, DOTOCR_CONFIG=str(path), PYTHONPATH=str(REPO))
    cli = subprocess.run([sys.executable, "-m", "dotocr", "ocr", str(tmp_path / "missing.png")], env=env,
                         capture_output=True, text=True, timeout=60)
    with socket.socket() as taken:  # the server stops at its bind, after reading the settings
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        serve = subprocess.run([sys.executable, "-m", "dotocr.server", "--port", str(port)], env=env,
                               capture_output=True, text=True, timeout=60)
    for done in (cli, serve):
        assert "Traceback" not in done.stderr, done.stderr
        lines = [line for line in done.stderr.splitlines() if str(path) in line]
        assert len(lines) == 1 and "could not be read" in lines[0], done.stderr
    assert path.read_bytes() == CORRUPT["5000-deep nesting"]


# -- permissions and concurrent writers -------------------------------------------------------------------

@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")
def test_the_settings_file_is_private_it_can_hold_an_api_key(tmp_path):
    path = tmp_path / "new-folder" / "settings.toml"
    store = SettingsFile(path)
    assert store.update({"remote_api_key": "sk-secret"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")
def test_an_old_readable_file_with_an_api_key_is_closed_up(tmp_path):
    path = tmp_path / "settings.toml"
    path.write_text('remote_api_key = "sk-secret"\n')
    path.chmod(0o644)
    assert SettingsFile(path).load().remote_api_key == "sk-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


WRITER = """
import sys
from pathlib import Path
from dotocr.config import SettingsFile
path, key, rounds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
store = SettingsFile(path)
for value in range(1, rounds + 1):
    assert store.update({key: value}), store.problems
"""

READER = """
import sys, time
from pathlib import Path
from dotocr.config import tomllib
path, seconds = Path(sys.argv[1]), float(sys.argv[2])
bad = reads = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        bad += 1
        continue
    except Exception:
        bad += 1
        continue
    reads += 1
    if data.get("colour") != "blue":
        bad += 1
print(reads, bad)
"""


@pytest.mark.timeout(120)
def test_two_processes_updating_different_keys_both_keep_their_keys(tmp_path):
    """The tray's menu and a CLI run saving at once: no key is lost, the person's own key survives, and a
    reader never sees an empty or half-written file."""
    import os
    import subprocess
    import sys

    path = tmp_path / "settings.toml"
    path.write_text('colour = "blue"  # the person\'s own key\n')
    env = dict(os.environ, PYTHONPATH=str(REPO))
    rounds = 60
    reader = subprocess.Popen([sys.executable, "-c", READER, str(path), "6"], env=env, stdout=subprocess.PIPE,
                              text=True)
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), key, str(rounds)], env=env,
                                stderr=subprocess.PIPE, text=True)
               for key in ("max_new_tokens", "history_size")]
    for writer in writers:
        _out, err = writer.communicate(timeout=90)
        assert writer.returncode == 0, err
    out, _ = reader.communicate(timeout=60)
    reads, bad = map(int, out.split())
    final = tomllib.loads(path.read_text(encoding="utf-8"))
    assert final == {"colour": "blue", "max_new_tokens": rounds, "history_size": rounds}
    assert reads > 0 and bad == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["settings.toml", "settings.toml.lock"]


def test_the_readme_lists_every_setting_with_its_declared_default():
    from dataclasses import fields

    from dotocr.config import default_of

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip(" `"): line for line in readme.splitlines() if line.startswith("| `")}
    for f in fields(Settings):
        assert f.name in rows, f"README's settings table lacks {f.name}"
        default = default_of(f.name)
        shown = '""' if default == "" else str(default).lower() if isinstance(default, bool) else str(default)
        assert f"`{shown}`" in rows[f.name], f"README gives another default for {f.name}"
