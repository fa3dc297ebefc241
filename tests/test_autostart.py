"""Start at login: XDG autostart for real in a temp XDG_CONFIG_HOME; the Windows Run key against a faked
winreg (the registry exists only on Windows)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dotocr.desktop import autostart as autostart_pkg
from dotocr.desktop.autostart import AutostartError, default_tray_command, get_autostart
from dotocr.desktop.autostart.windows import APPROVED_KEY, RUN_KEY, WindowsAutostart, run_command_line
from dotocr.desktop.autostart.xdg import XdgAutostart, exec_line
from dotocr.tray.app import launch_flags_from

pytestmark = pytest.mark.timeout(30)

TRICKY_ARGS = ["a b", 'say "hi"', "$HOME", "back\\slash", "100%", "it's", "`id`", "semi;colon", ""]


# --- XDG -----------------------------------------------------------------------------------------

def _desktop_exec_to_argv(value: str) -> list[str]:
    """What a desktop launcher does with Exec= (written from the spec, independently of the code under test):
    string unescaping, %% -> %, then splitting at spaces outside "...", where \\ escapes " ` $ and \\."""
    unescaped = value.replace("\\\\", "\0").replace("\\s", " ").replace("\0", "\\").replace("%%", "%")
    args: list[str] = []
    current: list[str] | None = None
    quoted = False
    chars = iter(unescaped)
    for char in chars:
        if quoted:
            if char == "\\":
                current.append(next(chars))
            elif char == '"':
                quoted = False
            else:
                current.append(char)
        elif char == " ":
            if current is not None:
                args.append("".join(current))
            current = None
        else:
            current = current if current is not None else []
            if char == '"':
                quoted = True
            else:
                current.append(char)
    assert not quoted, "unterminated quote"
    if current is not None:
        args.append("".join(current))
    return args


def _set_home(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """Point `~` at `home`: POSIX reads HOME, Windows' expanduser and Path.home() read USERPROFILE."""
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USERPROFILE", str(home))


def _exec_value(path: Path) -> str:
    line, = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.startswith("Exec=")]
    return line[len("Exec="):]


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="XDG autostart is the Linux backend")
def test_xdg_is_the_linux_backend_and_honours_xdg_config_home():
    backend = get_autostart()
    assert isinstance(backend, XdgAutostart)
    assert backend.path == Path(os.environ["XDG_CONFIG_HOME"]) / "autostart" / "dotocr.desktop"


def test_xdg_enable_writes_a_valid_entry_and_disable_removes_it():
    backend = XdgAutostart()
    assert backend.is_enabled() is False
    argv = ["/opt/dot ocr/bin/dotocr-tray", "--max-image-size", "1024"]
    backend.enable(argv)
    assert backend.is_enabled() is True
    text = backend.path.read_text(encoding="utf-8")
    assert text.startswith("[Desktop Entry]\n") and "Type=Application" in text
    assert "X-GNOME-Autostart-enabled=true" in text
    assert _desktop_exec_to_argv(_exec_value(backend.path)) == argv
    backend.disable()
    assert not backend.path.exists() and backend.is_enabled() is False
    backend.disable()  # idempotent


@pytest.mark.skipif(sys.platform == "win32", reason="Windows fact: there is no sh; Exec= lines are run by Linux "
                    "desktops only (the Run key's quoting meets CreateProcess in the next section)")
def test_xdg_exec_quoting_survives_a_real_shell(tmp_path):
    backend = XdgAutostart()
    argv = [sys.executable, "-c", "import sys; print(repr(sys.argv[1:]))", *TRICKY_ARGS]
    backend.enable(argv)
    command = _desktop_exec_to_argv(_exec_value(backend.path))
    assert command == argv
    # and the same line run by sh (the spec's quoting is a subset of sh's double quotes)
    line = _exec_value(backend.path).replace("\\\\", "\\").replace("%%", "%")
    done = subprocess.run(["sh", "-c", line], capture_output=True, text=True, timeout=20)
    assert done.stdout.strip() == repr(TRICKY_ARGS)


def test_exec_line_quotes_only_what_needs_it():
    assert exec_line(["/usr/bin/dotocr-tray", "--max-image-size", "1024"]) == \
        "/usr/bin/dotocr-tray --max-image-size 1024"
    assert exec_line(["a b"]) == '"a b"'
    # \$ inside quotes, then that backslash doubled by the file format's string escaping
    assert exec_line(["x$y"]) == '"x\\\\$y"'


def test_exec_line_refuses_line_breaks():
    with pytest.raises(AutostartError, match="line break"):
        exec_line(["a\nb"])


@pytest.mark.parametrize(("line", "enabled"), [("Hidden=true", False), ("Hidden=false", True),
                                                ("X-GNOME-Autostart-enabled=false", False), ("", True)])
def test_xdg_user_switches_are_honoured(line, enabled):
    backend = XdgAutostart()
    backend.enable(["/usr/bin/dotocr-tray"])
    text = backend.path.read_text(encoding="utf-8").replace("X-GNOME-Autostart-enabled=true\n", "")
    backend.path.write_text(text + line + "\n", encoding="utf-8")
    assert backend.is_enabled() is enabled


def test_xdg_garbage_file_reads_as_disabled():
    backend = XdgAutostart()
    backend.path.parent.mkdir(parents=True, exist_ok=True)
    backend.path.write_bytes(b"\xff\xfe not a desktop entry")
    assert backend.is_enabled() is False


def test_relative_xdg_config_home_is_ignored(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/dir")
    _set_home(monkeypatch, tmp_path)
    assert XdgAutostart().path == tmp_path / ".config" / "autostart" / "dotocr.desktop"


def test_enable_needs_a_command():
    with pytest.raises(AutostartError):
        XdgAutostart().enable([])


# --- Windows, against a fake winreg ------------------------------------------------------------------

class FakeWinreg:
    """The slice of winreg we use, over a dict: {key path: {value name: (data, type)}} under HKCU."""

    HKEY_CURRENT_USER = "HKCU"
    KEY_READ, KEY_SET_VALUE = 0x20019, 0x0002
    REG_SZ, REG_BINARY = 1, 3

    def __init__(self) -> None:
        self.keys: dict[str, dict[str, tuple[object, int]]] = {RUN_KEY: {}}

    class _Key:
        def __init__(self, values: dict) -> None:
            self.values = values

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def OpenKey(self, root, path, reserved=0, access=0):  # noqa: N802 - winreg names
        assert root == self.HKEY_CURRENT_USER
        if path not in self.keys:
            raise FileNotFoundError(2, "The system cannot find the file specified")
        return self._Key(self.keys[path])

    def CreateKeyEx(self, root, path, reserved=0, access=0):  # noqa: N802
        assert root == self.HKEY_CURRENT_USER
        return self._Key(self.keys.setdefault(path, {}))

    def QueryValueEx(self, key, name):  # noqa: N802
        if name not in key.values:
            raise FileNotFoundError(2, "The system cannot find the file specified")
        return key.values[name]

    def SetValueEx(self, key, name, reserved, kind, data):  # noqa: N802
        key.values[name] = (data, kind)

    def DeleteValue(self, key, name):  # noqa: N802
        if name not in key.values:
            raise FileNotFoundError(2, "The system cannot find the file specified")
        del key.values[name]


def test_windows_enable_writes_a_quoted_command_to_the_run_key():
    reg = FakeWinreg()
    backend = WindowsAutostart(winreg=reg)
    assert backend.is_enabled() is False
    argv = [r"C:\Program Files\Python311\pythonw.exe", "-m", "dotocr.tray", "--max-image-size", "1024"]
    backend.enable(argv)
    data, kind = reg.keys[RUN_KEY]["dotocr"]
    assert kind == reg.REG_SZ
    assert data == '"C:\\Program Files\\Python311\\pythonw.exe" -m dotocr.tray --max-image-size 1024'
    assert backend.is_enabled() is True


@pytest.mark.parametrize(("argv", "expected"), [
    ([r"C:\dotocr\dotocr-tray.exe"], r'"C:\dotocr\dotocr-tray.exe"'),
    ([r"C:\Python311\pythonw.exe", "-m", "dotocr.tray", "--model", r"D:\my models\dots"],
     r'"C:\Python311\pythonw.exe" -m dotocr.tray --model "D:\my models\dots"'),
])
def test_windows_run_value_always_quotes_the_program(argv, expected):
    reg = FakeWinreg()
    WindowsAutostart(winreg=reg).enable(argv)
    assert reg.keys[RUN_KEY]["dotocr"][0] == expected == run_command_line(argv)


def test_windows_run_value_parses_back_to_the_same_arguments():
    """What CommandLineToArgvW makes of the value, checked with the C runtime's rules (written here)."""
    argv = [r"C:\Program Files\dotocr\pythonw.exe", "-m", "dotocr.tray", "--model", "C:\\m\\a b\\", 'say "hi"']
    value = run_command_line(argv)
    program, rest = value[1:].split('"', 1)
    assert program == argv[0]
    assert _crt_split(rest.lstrip()) == argv[1:]


@pytest.mark.skipif(sys.platform != "win32", reason="CreateProcess and the C runtime's argv exist on Windows only "
                    "(the pure-Python parser above stands in for them elsewhere)")
def test_windows_run_value_survives_createprocess():
    """The Run value as Windows runs it at login: one command line, CreateProcess, the C runtime's argv."""
    argv = [sys.executable, "-c", "import sys; print(ascii(sys.argv[1:]))", *TRICKY_ARGS, "C:\\a b\\"]
    done = subprocess.run(run_command_line(argv), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ascii(argv[3:])


def _crt_split(line: str) -> list[str]:
    """The Microsoft C runtime's argument rules: 2n backslashes + quote -> n backslashes and a quote toggle,
    2n+1 backslashes + quote -> n backslashes and a literal quote; other backslashes are literal."""
    args: list[str] = []
    current, quoted, started, i = [], False, False, 0
    while i < len(line):
        char = line[i]
        if char == "\\":
            run = len(line[i:]) - len(line[i:].lstrip("\\"))
            if i + run < len(line) and line[i + run] == '"':
                current.append("\\" * (run // 2))
                if run % 2:
                    current.append('"')
                    i += run + 1
                else:
                    i += run
                started = True
                continue
            current.append("\\" * run)
            i += run
            started = True
            continue
        if char == '"':
            quoted, started = not quoted, True
        elif char in " \t" and not quoted:
            if started:
                args.append("".join(current))
            current, started = [], False
        else:
            current.append(char)
            started = True
        i += 1
    if started:
        args.append("".join(current))
    return args


def test_windows_program_path_with_a_quote_is_refused():
    with pytest.raises(AutostartError, match="double quote"):
        run_command_line(['C:\\odd"name\\x.exe'])


@pytest.mark.parametrize(("first_byte", "enabled"),
                         [(0x02, True), (0x06, True), (0x03, False), (0x07, False)])
def test_windows_task_manager_switch_wins(first_byte, enabled):
    reg = FakeWinreg()
    backend = WindowsAutostart(winreg=reg)
    backend.enable(["C:\\dotocr\\dotocr-tray.exe"])
    reg.keys[APPROVED_KEY] = {"dotocr": (bytes([first_byte]) + bytes(11), reg.REG_BINARY)}
    assert backend.is_enabled() is enabled


def test_windows_enable_from_our_menu_clears_a_task_manager_disable():
    reg = FakeWinreg()
    backend = WindowsAutostart(winreg=reg)
    backend.enable(["C:\\dotocr\\dotocr-tray.exe"])
    reg.keys[APPROVED_KEY] = {"dotocr": (bytes([0x03]) + bytes(11), reg.REG_BINARY)}
    backend.enable(["C:\\dotocr\\dotocr-tray.exe"])
    assert backend.is_enabled() is True and "dotocr" not in reg.keys[APPROVED_KEY]


def test_windows_disable_removes_both_values_and_is_idempotent():
    reg = FakeWinreg()
    backend = WindowsAutostart(winreg=reg)
    backend.enable(["C:\\dotocr\\dotocr-tray.exe"])
    reg.keys[APPROVED_KEY] = {"dotocr": (bytes([0x02]) + bytes(11), reg.REG_BINARY)}
    backend.disable()
    assert "dotocr" not in reg.keys[RUN_KEY] and "dotocr" not in reg.keys[APPROVED_KEY]
    assert backend.is_enabled() is False
    backend.disable()


def test_windows_registry_failure_is_one_sentence():
    class ReadOnlyWinreg(FakeWinreg):
        def SetValueEx(self, key, name, reserved, kind, data):  # noqa: N802
            raise PermissionError(5, "Access is denied")

    with pytest.raises(AutostartError, match="Access is denied"):
        WindowsAutostart(winreg=ReadOnlyWinreg()).enable(["x.exe"])


# --- the command that starts the tray ------------------------------------------------------------

def test_command_uses_the_installed_script_beside_the_interpreter(tmp_path, monkeypatch):
    python = tmp_path / "bin" / "python"
    script = tmp_path / "bin" / "dotocr-tray"
    script.parent.mkdir()
    python.touch()
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(python))
    monkeypatch.setattr(sys, "platform", "linux")
    assert default_tray_command(["--max-image-size", "1024"]) == [str(script), "--max-image-size", "1024"]


def test_command_falls_back_to_the_module(tmp_path, monkeypatch):
    python = tmp_path / "python"
    monkeypatch.setattr(sys, "executable", str(python))
    monkeypatch.setattr(sys, "platform", "linux")
    expected = [str(python), "-m", "dotocr.tray", "--hotkey", "ctrl+alt+o"]
    assert default_tray_command(["--hotkey", "ctrl+alt+o"]) == expected


def test_command_on_windows_prefers_pythonw(tmp_path, monkeypatch):
    python = tmp_path / "python.exe"
    (tmp_path / "pythonw.exe").touch()
    monkeypatch.setattr(sys, "executable", str(python))
    monkeypatch.setattr(sys, "platform", "win32")
    assert default_tray_command([]) == [str(tmp_path / "pythonw.exe"), "-m", "dotocr.tray"]


def test_command_of_a_frozen_build_is_the_exe_itself(tmp_path, monkeypatch):
    exe = tmp_path / "dotocr-tray.exe"
    monkeypatch.setattr(sys, "executable", str(exe))
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert default_tray_command(["--max-image-size", "1024"]) == [str(exe), "--max-image-size", "1024"]


def test_unsupported_platform_refuses_clearly(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    backend = get_autostart()
    assert backend.is_enabled() is False
    with pytest.raises(AutostartError, match="not supported"):
        backend.enable(["/Applications/dotocr"])
    assert autostart_pkg.BACKENDS[-1].__name__ == "UnsupportedAutostart"


# --- the flags repeated at login ----------------------------------------------------------------------

def test_launch_flags_drop_capture_and_make_local_model_paths_absolute(tmp_path, monkeypatch):
    (tmp_path / "models" / "dots").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    _set_home(monkeypatch, tmp_path)
    absolute = str(tmp_path / "models" / "dots")
    assert launch_flags_from(["--model", "./models/dots", "--max-image-size", "1024", "--capture"]) == [
        "--model", absolute, "--max-image-size", "1024"]
    assert launch_flags_from(["--model=models/dots"]) == [f"--model={absolute}"]  # an existing folder
    assert launch_flags_from(["--model", "~/models/dots"]) == ["--model", absolute]
    assert launch_flags_from(["--model", "../elsewhere"]) == ["--model", str(tmp_path.parent / "elsewhere")]


def test_launch_flags_keep_repo_ids_and_other_values(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flags = ["--model", "rednote-hilab/dots.ocr", "--hotkey", "ctrl+alt+o", "--device", "cpu", "-v"]
    assert launch_flags_from(flags) == flags
