"""The tray's mediator without a display: a fake engine that reports a resolved plan (as the real one does on
a bf16 GPU or a small card, which this machine lacks), a fake clipboard and notifier, the real history and
settings files. These are unit tests of our own decisions; the real engine, clipboard, hotkey and icon run
in test_tray_controller.py, test_tray_menu.py and test_tray_e2e.py."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from PIL import Image

from dotocr.config import Settings, SettingsFile
from dotocr.tray.choices import CudaFacts
from dotocr.tray.controller import Controller, Services
from dotocr.tray.history import History
from tests.tray_helpers import FakeClipboard, FakeNotifier, PlanEngine, wait_for


def make(tmp_path: Path, settings: Settings, plan: tuple[str, str], *, settings_file: SettingsFile | None = None,
         cuda: CudaFacts = CudaFacts(True, bf16=True)) -> Controller:
    engines: list[PlanEngine] = []

    def factory(s: Settings, on_state):
        engine = PlanEngine(s, on_state=on_state, auto_plan=plan)
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


def loaded(tmp_path: Path, settings: Settings, plan: tuple[str, str], **options) -> Controller:
    controller = make(tmp_path, settings, plan, **options)
    controller.start()
    assert controller.wait_loaded(5)
    return controller


def checked_and_labels(controller: Controller) -> tuple[str | None, list[str]]:
    return controller.precision_choice(), [controller.precision_label(k) for k in ("4bit", "16bit", "cpu")]


def test_the_menu_and_tooltip_say_what_runs_bf16_or_fp16(tmp_path):
    from dotocr.tray.status_words import tooltip

    bf16 = loaded(tmp_path, Settings(), ("cuda", "bf16"))
    assert checked_and_labels(bf16) == ("16bit", ["4-bit GPU", "BF16 GPU", "CPU"])
    assert bf16.status_text() == "Ready (bf16 on cuda)"
    assert "bf16 on cuda" in tooltip(bf16.state(), "ctrl+o")

    older_gpu = loaded(tmp_path, Settings(), ("cuda", "fp16"), cuda=CudaFacts(True, bf16=False))
    assert checked_and_labels(older_gpu) == ("16bit", ["4-bit GPU", "FP16 GPU", "CPU"])
    assert older_gpu.status_text() == "Ready (fp16 on cuda)"


def test_before_anything_ran_the_16bit_item_names_what_the_gpu_would_run(tmp_path):
    controller = make(tmp_path, Settings(), ("cuda", "4bit"))
    assert checked_and_labels(controller) == (None, ["4-bit GPU", "16-bit GPU", "CPU"])  # nothing known yet
    controller.start()
    assert controller.wait_loaded(5)
    assert checked_and_labels(controller) == ("4bit", ["4-bit GPU", "BF16 GPU", "CPU"])


def test_switching_from_what_auto_chose_asks_for_the_gpus_16bit_type_and_the_engine_reloads(tmp_path):
    settings_file = SettingsFile(tmp_path / "settings.toml")
    controller = loaded(tmp_path, Settings(), ("cuda", "4bit"), settings_file=settings_file)
    engine = controller.engines[0]
    controller.set_precision("16bit")
    assert controller.precision_choice() == "16bit"  # the radio item moves at once
    assert controller.wait_loaded(5)
    assert (controller.settings.device, controller.settings.precision) == ("cuda", "bf16")
    saved = SettingsFile(settings_file.path).load()
    assert (saved.device, saved.precision) == ("cuda", "bf16")
    assert engine.calls[-4:] == ["reconfigure", "unload", "load", "loaded cuda bf16"]
    assert controller.status_text() == "Ready (bf16 on cuda)"
    assert controller.engines == [engine]  # the same engine, reconfigured


def test_clicking_the_checked_cpu_item_changes_nothing(tmp_path):
    controller = loaded(tmp_path, Settings(device="cpu", precision="fp32"), ("cpu", "fp32"))
    engine = controller.engines[0]
    calls = list(engine.calls)
    controller.set_precision("cpu")
    assert controller.wait_loaded(5)
    assert engine.calls == calls
    assert controller.settings.precision == "fp32"


def test_without_cuda_the_gpu_items_are_refused_with_a_toast(tmp_path):
    controller = loaded(tmp_path, Settings(), ("cpu", "fp32"), cuda=CudaFacts(False))
    assert [controller.precision_enabled(k) for k in ("4bit", "16bit", "cpu")] == [False, False, True]
    assert checked_and_labels(controller) == ("cpu", ["4-bit GPU", "16-bit GPU", "CPU"])
    before = controller.settings
    controller.set_precision("4bit")
    assert controller.settings == before
    assert controller.services.notifier.titles() == ["No CUDA GPU"]


def test_a_switch_during_a_read_returns_at_once_and_applies_after_it(tmp_path):
    controller = loaded(tmp_path, Settings(), ("cuda", "4bit"))
    engine = controller.engines[0]
    engine.gate = threading.Event()
    try:
        assert controller.start_ocr(Image.new("RGB", (20, 10)))
        assert engine.entered.wait(5)
        assert controller.state().status == "busy"
        started = time.perf_counter()
        controller.set_precision("cpu")
        assert time.perf_counter() - started < 0.5
        assert controller.precision_choice() == "cpu"
        assert controller.services.notifier.titles() == ["Precision"]
        time.sleep(0.1)
        assert "reconfigure" not in engine.calls  # the read keeps its model
    finally:
        engine.gate.set()
    assert controller.wait_idle(5) and controller.wait_loaded(5)
    assert controller.services.clipboard.copied == ["fake text"]
    assert engine.calls[-4:] == ["reconfigure", "unload", "load", "loaded cpu fp32"]
    assert controller.status_text() == "Ready (fp32 on cpu)"


def test_after_freeing_memory_the_item_auto_chose_stays_checked_and_reload_keeps_it_freed(tmp_path):
    settings_file = SettingsFile(tmp_path / "settings.toml")
    controller = loaded(tmp_path, Settings(), ("cuda", "4bit"), settings_file=settings_file)
    engine = controller.engines[0]
    controller.free_memory()
    wait_for(lambda: controller.state().status == "unloaded", 5)
    assert controller.status_text().startswith("Model not in memory")
    assert controller.precision_choice() == "4bit"
    settings_file.path.write_text("history_size = 3\n", encoding="utf-8")
    controller.reload_settings()
    assert controller.wait_loaded(5)
    assert engine.calls[-2:] == ["unload", "reconfigure"]  # handed the settings, not loaded again
    assert controller.state().status == "unloaded"


def test_a_retry_after_a_failed_creation_makes_the_engine(tmp_path):
    attempts: list[int] = []

    def flaky(settings, on_state):
        attempts.append(1)
        if len(attempts) == 1:
            raise ImportError("No module named 'torch'")
        return PlanEngine(settings, on_state=on_state)

    services = Services(clipboard=FakeClipboard(), notifier=FakeNotifier(),
                        history=History(tmp_path / "history.json", 5), cuda_probe=lambda: CudaFacts(False))
    controller = Controller(settings=Settings(), services=services, engine_factory=flaky)
    controller.start()
    assert controller.wait_loaded(5)
    assert controller.state().status == "error" and "torch" in controller.status_text()
    controller.retry_load()
    assert controller.wait_loaded(5)
    assert controller.status_text() == "Ready (fp32 on cpu)"
    assert controller.services.notifier.titles() == ["The model could not be loaded"]


def test_after_a_failure_outside_the_engine_a_retry_shows_the_engines_state_again(tmp_path):
    settings_file = SettingsFile(tmp_path / "settings.toml")
    controller = loaded(tmp_path, Settings(), ("cuda", "4bit"), settings_file=settings_file)
    engine = controller.engines[0]
    real_reconfigure = engine.reconfigure

    def broken(settings):
        raise RuntimeError("a bug in reconfigure")

    engine.reconfigure = broken  # type: ignore[method-assign]
    settings_file.path.write_text("history_size = 3\n", encoding="utf-8")
    controller.reload_settings()
    assert controller.wait_loaded(5)
    assert controller.state().status == "error" and "RuntimeError" in controller.status_text()
    engine.reconfigure = real_reconfigure  # type: ignore[method-assign]
    controller.retry_load()
    assert controller.wait_loaded(5)
    assert engine.calls.count("loaded cuda 4bit") == 1  # the model never left...
    assert controller.status_text() == "Ready (4bit on cuda)"  # ...and the engine's word is shown again
