"""Windows Python under Wine, started and watched from Linux, for the end-to-end tests of dotocr's Windows paths
(tests/test_windows_e2e.py). scripts/setup_wine_python.sh sets it up; scripts/wine_python.sh holds the Wine
workarounds, so these tests start every Windows process through it.

Wine stands in for the Windows API (RegisterHotKey, the clipboard, the registry, the tray icon and its
balloons, the console and its code pages), not for Windows: what it cannot show (CUDA, mixed-DPI monitors,
Windows 10/11 toasts, SmartScreen) is listed as untested in docs/windows.md.

Without that set-up these tests skip on a developer's machine and fail in CI (CI=true), where .ci/run makes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
WRAPPER = REPO / "scripts" / "wine_python.sh"
PROBE = REPO / "tests" / "wine_probe.py"
_OUR_PROGRAMS = ("python.exe", "pythonw.exe", "dotocr.exe", "dotocr-tray.exe", "dotocr-serve.exe")


def wine_root() -> Path:
    """Where scripts/setup_wine_python.sh put the Windows Python and the Wine prefix (the same default)."""
    configured = os.environ.get("DOTOCR_WINE_ROOT")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dotocr-wine"


def wine_problem() -> str | None:
    """Why Windows Python under Wine cannot run here, or None when it can."""
    if sys.platform == "win32":
        return "these tests drive Wine from Linux; under Windows Python they have nothing to drive"
    root = wine_root()
    if shutil.which("wine") is None:
        return "Wine is not installed (scripts/setup_wine_python.sh installs it)"
    if not (root / "python" / "Lib" / "site-packages" / "dotocr").is_dir():
        return f"no Windows Python with dotocr in {root}: run scripts/setup_wine_python.sh"
    return None


def require_wine() -> None:
    """Skip without Wine, except in CI (CI=true), where .ci/run sets it up and these tests must run."""
    why = wine_problem()
    if why is None:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes") and sys.platform != "win32":
        pytest.fail(f"{why} (CI must run these tests: .ci/run sets Wine up)")
    pytest.skip(why)


def winpath(path: Path | str) -> str:
    """The Windows name of a Linux path: Wine's prefix maps drive Z: to the Linux root."""
    return "Z:" + str(Path(path).absolute()).replace("/", "\\")


class Wine:
    """Windows processes under one Wine session, all tagged so that none can outlive a test unnoticed."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.tag = uuid.uuid4().hex
        self.base_env = dict(os.environ if env is None else env)
        self.base_env["DOTOCR_WINE_TEST"] = self.tag
        self.base_env.setdefault("LANG", "C.UTF-8")

    def env(self, **extra: str) -> dict[str, str]:
        return {**self.base_env, **extra}

    def popen(self, args: list[str], *, exe: str = "python.exe", env: dict[str, str] | None = None,
              stdin: Any = subprocess.DEVNULL, stdout: Any = subprocess.PIPE, stderr: Any = subprocess.STDOUT,
              **kwargs: Any) -> subprocess.Popen:
        """Start `exe` (in the Windows Python's folder, or a relative path such as Scripts\\dotocr.exe)
        under Wine. stdout and stderr are pipes by default: a file there kills the console Python."""
        full_env = {**(env or self.env()), "DOTOCR_WINE_EXE": exe}
        return subprocess.Popen([str(WRAPPER), *args], env=full_env, stdin=stdin, stdout=stdout, stderr=stderr,
                                cwd=REPO, **kwargs)

    def popen_logged(self, args: list[str], log: Path, *, exe: str = "python.exe",
                     env: dict[str, str] | None = None) -> subprocess.Popen:
        """`popen` with stdout and stderr copied to the Linux file `log` by a thread (Wine's console Python
        cannot write to a file itself), so a failing test can show what the program said."""
        process = self.popen(args, exe=exe, env=env)
        threading.Thread(target=_copy, args=(process.stdout, log), name=f"log {log.name}", daemon=True).start()
        return process

    def run(self, args: list[str], *, timeout: float, input: bytes | None = None, exe: str = "python.exe",
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run to completion; stdout and stderr as separate byte strings."""
        process = self.popen(args, exe=exe, env=env, stdin=subprocess.PIPE if input is not None else
                             subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            out, err = process.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_all()
            out, err = process.communicate(timeout=30)
            raise AssertionError(f"{exe} {' '.join(args)} did not finish in {timeout:g} s; output: "
                                 f"{out[-2000:]!r} {err[-2000:]!r}") from None
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)

    def probe(self, *args: str, timeout: float = 60) -> Any:
        """tests/wine_probe.py's answer (the Win32 API asked from inside Wine)."""
        done = self.run([winpath(PROBE), *args], timeout=timeout)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        return json.loads(done.stdout.decode("utf-8").strip().splitlines()[-1])

    def ours(self) -> list[int]:
        """Linux process ids of the Windows programs this session started that are still running."""
        pids = []
        marker = f"DOTOCR_WINE_TEST={self.tag}".encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if marker not in (entry / "environ").read_bytes().split(b"\0"):
                    continue
                name = (entry / "comm").read_text(errors="replace").strip().lower()
            except OSError:  # gone meanwhile, or not ours to read
                continue
            if any(program[:15] == name for program in _OUR_PROGRAMS):  # Linux keeps 15 characters of a name
                pids.append(int(entry.name))
        return pids

    def kill_all(self) -> None:
        for pid in self.ours():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def shut_down(self) -> None:
        """End every Wine process of this prefix (Wine's own services too) and wait for the server to go."""
        self.kill_all()
        env = self.env(WINEPREFIX=str(wine_root() / "prefix"))
        subprocess.run(["wineserver", "-k"], env=env, capture_output=True, timeout=60)
        subprocess.run(["wineserver", "-w"], env=env, capture_output=True, timeout=60)


def _copy(stream: Any, log: Path) -> None:
    with log.open("ab") as out:
        for line in iter(stream.readline, b""):
            out.write(line)
            out.flush()
