"""Importing llama.cpp: a missing or unpinned llama-cpp-python is one sentence with the command that fixes it."""

from __future__ import annotations

import sys

import pytest

from dotocr.engine import llamacpp_runtime
from dotocr.engine.llamacpp_runtime import LlamaCppUnavailableError, llamacpp_available, load_bindings


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(llamacpp_runtime, "_bindings", None)
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # what Python does for a package that is not there
    with pytest.raises(LlamaCppUnavailableError, match=r'not installed .*pip install "llama-cpp-python==0\.3\.36"'):
        load_bindings()
    assert llamacpp_available() is False


def test_other_version_is_refused(monkeypatch):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    monkeypatch.setattr(llamacpp_runtime, "_bindings", None)
    monkeypatch.setattr(llama_cpp, "__version__", "0.3.99")
    with pytest.raises(LlamaCppUnavailableError, match="0.3.99 is installed but dotocr is written for 0.3.36"):
        load_bindings()


def test_pinned_version_loads_once():
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    assert load_bindings() is load_bindings()
    assert llamacpp_available() is True
