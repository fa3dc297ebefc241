"""Whether a toast can be seen, which decides "auto"'s result window: asked of a real, private D-Bus session bus."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dotocr.desktop.notification.logging_backend import LoggingNotifier
from dotocr.desktop.notification.notify_send import NotifySendNotifier
from dotocr.tray.toast_visibility import NOTIFICATIONS, ToastCheck, notification_daemon, toasts_visible

needs_dbus = pytest.mark.skipif(shutil.which("dbus-daemon") is None or shutil.which("dbus-send") is None,
                                reason="dbus-daemon and dbus-send are not installed")

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <servicedir>{services}</servicedir>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/><allow own="*"/>
  </policy>
</busconfig>
"""


@pytest.fixture
def session_bus(tmp_path) -> Iterator[tuple[dict[str, str], Path]]:
    """A private session bus (its own dbus-daemon) and the folder of services it can start."""
    services = tmp_path / "services"
    services.mkdir()
    config = tmp_path / "bus.conf"
    config.write_text(BUS_CONFIG.format(socket=tmp_path / "bus", services=services), encoding="utf-8")
    daemon = subprocess.Popen(["dbus-daemon", f"--config-file={config}", "--nofork", "--print-address=1"],
                              stdout=subprocess.PIPE, text=True)
    try:
        address = daemon.stdout.readline().strip()
        assert address.startswith("unix:"), address
        yield {"DBUS_SESSION_BUS_ADDRESS": address, "PATH": "/usr/bin:/bin"}, services
    finally:
        daemon.terminate()
        daemon.wait(10)


def test_the_log_shows_nothing_and_the_icons_own_toasts_count_as_seen():
    assert toasts_visible(LoggingNotifier()) is False
    assert toasts_visible(object()) is True  # a backend we know nothing against: assume it shows
    assert ToastCheck(LoggingNotifier())() is False  # known before any bus is asked


def test_without_a_session_bus_nobody_shows_a_toast(tmp_path):
    assert notification_daemon({"XDG_RUNTIME_DIR": str(tmp_path)}) is False
    assert notification_daemon({}) is False


@needs_dbus
def test_a_bus_without_a_notification_daemon_and_with_one_it_can_start(session_bus):
    env, services = session_bus
    assert notification_daemon(env) is False
    (services / "notifications.service").write_text(
        f"[D-BUS Service]\nName={NOTIFICATIONS}\nExec=/bin/false\n", encoding="utf-8")
    subprocess.run(["dbus-send", "--session", "--dest=org.freedesktop.DBus", "--type=method_call",
                    "/org/freedesktop/DBus", "org.freedesktop.DBus.ReloadConfig"], env=env, check=True, timeout=5)
    assert notification_daemon(env) is True


def test_notify_send_counts_as_seen_only_with_a_daemon(monkeypatch):
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/nonexistent")
    assert toasts_visible(NotifySendNotifier()) is False
