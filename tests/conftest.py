"""Shared fixtures: the golden tiny checkpoint and small random dots.ocr models built offline."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Tiny models are dominated by per-op overhead; one thread avoids contention on the 2-core test machines.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
BUNDLED_TINY = REPO / "tests" / "data" / "dots_tiny"
SHARED_TINY = REPO.parent / "shared" / "golden" / "dots_tiny"


def golden_dir() -> Path:
    """The unmodified fixture beside the checkout when present (as in CI), else the bundled copy."""
    return SHARED_TINY if (SHARED_TINY / "config.json").exists() else BUNDLED_TINY


@pytest.fixture(scope="session")
def dots_tiny() -> Path:
    return golden_dir()


@pytest.fixture(autouse=True)
def _collect_on_the_main_thread(request):
    """Tk objects a test left behind must be finalised here, on the thread that made them: collected later
    on a worker thread (the engine's unload runs gc), Tcl aborts the whole test process. Only the modules
    that use Tk pay for the collection."""
    yield
    if request.module.__name__.startswith(("test_tray", "test_capture")):
        gc.collect()


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory, monkeypatch):
    """Settings, history and autostart files go to a temp folder, never the developer's own."""
    base = tmp_path_factory.mktemp("user")
    monkeypatch.setenv("DOTOCR_CONFIG", str(base / "config" / "settings.toml"))
    monkeypatch.setenv("DOTOCR_DATA_DIR", str(base / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(base / "xdg-config"))
