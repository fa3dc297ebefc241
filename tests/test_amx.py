"""llama.cpp's AMX path: the per-process permission is asked for, and the extra buffers follow the answer.

The test that matters runs only on a CPU with AMX tiles: a fresh process loads a Q8_0 GGUF with llama.cpp's
extra (AMX) buffers on and decodes a prompt batch, a verification batch and single tokens. Without the permission
that process dies with SIGILL at its first tile instruction (what our AMX Xeon did before the decoder asked for
it). On other CPUs there are no tiles to test; there only the decision logic is checked.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

from dotocr.engine.decoders import amx

pytestmark = pytest.mark.timeout(300)


def test_extra_buffers_stay_on_without_amx_and_follow_the_permission_with_it(monkeypatch):
    if not amx.cpu_has_amx():
        assert amx.extra_buffers_allowed() and not amx.request_amx_permission()  # llama.cpp's defaults, no ask
    asked: list[int] = []
    monkeypatch.setattr(amx, "cpu_has_amx", lambda: True)
    monkeypatch.setattr(amx, "_linux_x86_64", lambda: True)
    monkeypatch.setattr(amx, "amx_permitted", lambda: bool(asked))
    monkeypatch.setattr(amx, "_arch_prctl", lambda code, argument: asked.append(code) or 0)
    assert amx.extra_buffers_allowed() and asked == [amx.ARCH_REQ_XCOMP_PERM]
    assert amx.extra_buffers_allowed() and len(asked) == 1  # granted already: not asked again
    asked.clear()
    monkeypatch.setattr(amx, "_arch_prctl", lambda code, argument: -1)  # refused (ENOSPC, EPERM, no kernel support)
    assert not amx.extra_buffers_allowed()


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
    assert decoder.extra_buffers and amx_permitted()
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
    assert "decoded 48" in done.stdout
    assert "AMX" in done.stderr  # llama.cpp's load log put weights in its AMX buffer: the tiles really ran
