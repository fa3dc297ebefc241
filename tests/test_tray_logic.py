"""The tray's mediator without a display: a fake engine that reports a resolved plan (as the real one does on
a bf16 GPU or a small card, which this machine lacks), a fake clipboard and notifier, the real history and
settings files. These are unit tests of our own decisions; the real engine, clipboard, hotkey and icon run
in test_tray_controller.py, test_tray_menu.py and test_tray_e2e.py."""

from __future__ import annotations

from pathlib import Path

from dotocr.config import Settings, SettingsFile
from dotocr.tray.choices import CudaFacts
from dotocr.tray.controller import Controller, Services
from dotocr.tray.history import History
from tests.tray_helpers import FakeClipboard, FakeNotifier, PlanEngine


def make(tmp_path: Path, settings: Settings, plan: tuple[str, str], *, settings_file: SettingsFile | None = None,
         cuda: CudaFacts = CudaFacts(True, bf16=True)) -> Controller:
    engines: list[PlanEngine] = []

    def factory(s: Settings, on_state):
        engine = PlanEngine(s, on_state=on_state, plan=plan)
        engines.append(engine)
        return engine

    services = Services(clipboard=FakeClipboard(), notifier=FakeNotifier(),
                        history=History(tmp_path / "history.json", 5), cuda_probe=lambda: cuda)
    controller = Controller(settings=settings, services=services, engine_factory=factory,
                            settings_file=settings_file)
    controller.engines = engines  # type: ignore[attr-defined]
    return controller


def test_a_bf16_gpu_reads_bf16_in_the_status_line(tmp_path):
    controller = make(tmp_path, Settings(device="cuda", precision="bf16"), ("cuda", "bf16"))
    controller.start()
    assert controller.wait_loaded(5)
    status = controller.status_text()
    assert "bf16" in status.lower() and "fp16" not in status.lower(), status


def test_the_checked_4bit_item_after_auto_chose_4bit_reloads_nothing_and_saves_nothing(tmp_path):
    settings_file = SettingsFile(tmp_path / "settings.toml")
    controller = make(tmp_path, Settings(device="auto", precision="auto"), ("cuda", "4bit"),
                      settings_file=settings_file)
    controller.start()
    assert controller.wait_loaded(5)
    engine = controller.engines[0]
    assert controller.precision_choice() == "4bit"  # what auto resolved to is the checked item
    calls = list(engine.calls)
    controller.set_precision("4bit")  # the person clicks the item that is already checked
    assert controller.wait_loaded(5)
    assert engine.calls == calls, "clicking the checked item asked the engine to reconfigure or load"
    assert (controller.settings.device, controller.settings.precision) == ("auto", "auto")
    assert not settings_file.path.exists()
    assert controller.services.notifier.shown == []
