"""llama.cpp's AMX path: the per-process permission is asked for, and the extra buffers follow the answer.

The test that matters runs only on a CPU with AMX tiles: a fresh process loads a Q8_0 GGUF as the decoder decides
(the permission asked, llama.cpp's AMX kernels tried in a child first) and decodes a prompt batch, verification
batches and single tokens. Before this, that process died with SIGILL at its first tile instruction on our AMX
Xeon; now it must never die, and where the check found the tiles working llama.cpp must really use them. On other
CPUs there are no tiles: there the decision logic and the child's own code are checked.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dotocr.engine.decoders import amx

pytestmark = pytest.mark.timeout(300)


def test_extra_buffers_stay_on_without_amx_and_follow_the_permission_with_it(monkeypatch):
    if not amx.cpu_has_amx():
        assert amx.extra_buffers_allowed(Path("any.gguf")) and not amx.request_amx_permission()  # no ask
    asked: list[int] = []
    monkeypatch.setattr(amx, "cpu_has_amx", lambda: True)
    monkeypatch.setattr(amx, "_linux_x86_64", lambda: True)
    monkeypatch.setattr(amx, "amx_permitted", lambda: bool(asked))
    monkeypatch.setattr(amx, "_arch_prctl", lambda code, argument: asked.append(code) or 0)
    monkeypatch.setattr(amx, "amx_runs_here", lambda gguf: True)  # the child's verdict: see the tests below
    assert amx.extra_buffers_allowed(Path("any.gguf")) and asked == [amx.ARCH_REQ_XCOMP_PERM]
    assert amx.extra_buffers_allowed(Path("any.gguf")) and len(asked) == 1  # granted already: not asked again
    asked.clear()
    monkeypatch.setattr(amx, "_arch_prctl", lambda code, argument: -1)  # refused (ENOSPC, EPERM, no kernel support)
    assert not amx.extra_buffers_allowed(Path("any.gguf"))


CHILD = textwrap.dedent("""
    import logging
    import sys
    from pathlib import Path
    from dotocr.engine.decoders.base import DecodeRequest
    from dotocr.engine.decoders.llamacpp import load_llamacpp_decoder
    from dotocr.engine.decoders.speculation import Drafter
    from dotocr.engine.decoders.amx import amx_permitted
    from tests.tiny_models import llamacpp_plan

    logging.basicConfig(level=logging.DEBUG)  # llama.cpp's load log, which names the buffer types it used
    decoder = load_llamacpp_decoder(Path(sys.argv[1]), llamacpp_plan("q8_0"), n_threads=2, gguf_dir=Path(sys.argv[2]))
    assert amx_permitted()  # asked before the model loaded
    print("extra buffers", decoder.extra_buffers)
    prompt = [1005] + list(range(40, 100)) + [1006, 1007]
    out = decoder.generate(DecodeRequest(prompt, None, None, 1000, 48, drafter=Drafter()), lambda t, p: False)
    print("decoded", len(out))
""")


@pytest.mark.skipif(not amx.cpu_has_amx(), reason="this CPU has no AMX tiles (no amx_tile in /proc/cpuinfo): the "
                    "SIGILL this guards against cannot happen here")
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
def test_llama_cpp_decodes_on_amx_tiles_in_a_fresh_process(dots_tiny, tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", CHILD, str(dots_tiny), str(tmp_path)], capture_output=True,
                          text=True, cwd=root, env={**os.environ, "PYTHONPATH": root}, timeout=240)
    assert done.returncode == 0, f"exit {done.returncode} (-4 is SIGILL): {done.stderr[-2000:]}"
    assert "decoded 48" in done.stdout  # whatever the tiles do here, the decoder's own process never dies
    if "extra buffers True" in done.stdout:  # the check found the tiles working: llama.cpp really used them
        assert "AMX" in done.stderr


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
def test_the_amx_check_runs_llama_cpp_in_a_child_and_reports_its_verdict(dots_tiny, tmp_path):
    """The child the decoder starts on an AMX CPU: here (any CPU) it must load the GGUF on llama.cpp's extra
    buffers and decode, so on an AMX CPU only the tiles themselves can make it fail. The permission request is
    answered yes in this child, as Linux would on an AMX CPU."""
    from dotocr.engine.gguf.convert import ensure_gguf

    gguf = ensure_gguf(dots_tiny, "q8_0", directory=tmp_path, progress=False)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    child = ("import sys\nfrom dotocr.engine.decoders import llamacpp\n"
             "llamacpp.request_amx_permission = lambda: True\nllamacpp.amx_probe(sys.argv[1])\n")
    done = subprocess.run([sys.executable, "-c", child, str(gguf)], capture_output=True, text=True, cwd=root,
                          env={**os.environ, "PYTHONPATH": root}, timeout=240)
    assert done.returncode == 0 and done.stdout.strip().endswith("amx ok"), done.stderr[-2000:]


def test_a_crashing_child_keeps_the_buffers_off_and_is_asked_once(monkeypatch, tmp_path):
    """A SIGILL in the check costs the child, not the tray or the server; the verdict is kept for this machine."""
    monkeypatch.setenv("DOTOCR_DATA_DIR", str(tmp_path))
    runs: list[list[str]] = []

    def crashing(command, **kwargs):
        runs.append(command)
        return subprocess.CompletedProcess(command, -4, "", "Illegal instruction")

    monkeypatch.setattr(amx.subprocess, "run", crashing)
    assert amx.amx_runs_here(tmp_path / "model.gguf") is False
    assert amx.amx_runs_here(tmp_path / "model.gguf") is False and len(runs) == 1
    monkeypatch.setattr(amx, "cpu_has_amx", lambda: True)
    monkeypatch.setattr(amx, "request_amx_permission", lambda: True)
    assert amx.extra_buffers_allowed(tmp_path / "model.gguf") is False and len(runs) == 1


@pytest.mark.skipif(amx.cpu_has_amx(), reason="on an AMX CPU the child's real verdict is the test above")
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
def test_the_real_child_starts_and_without_amx_says_no(monkeypatch, tmp_path, dots_tiny):
    """The child command itself (what an AMX CPU runs): it starts, and here, with no tiles to grant, it refuses."""
    import json

    monkeypatch.setenv("DOTOCR_DATA_DIR", str(tmp_path))
    assert amx.amx_runs_here(dots_tiny / "model.safetensors") is False
    verdict = json.loads((tmp_path / "llamacpp_amx.json").read_text(encoding="utf-8"))
    assert verdict["runs"] is False and verdict["detail"] == "exit 3"
