"""`dotocr convert-gguf`, run as a real subprocess: the file, its reuse, and one-sentence errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

gguf = pytest.importorskip("gguf", reason="convert-gguf needs the gguf package (pip install 'dotocr[llamacpp]')")

REPO = Path(__file__).resolve().parents[1]


def convert(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DOTOCR_DATA_DIR": str(data_dir), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "dotocr", "convert-gguf", *args], capture_output=True, text=True,
                          env=env, timeout=240, cwd=REPO)


def test_writes_once_copies_on_request_and_prints_the_path(tmp_path, dots_tiny):
    data = tmp_path / "data"
    first = convert(str(dots_tiny), "--quant", "f16", data_dir=data)
    assert first.returncode == 0, first.stderr
    cached = Path(first.stdout.strip())
    assert cached.parent == data / "gguf" and cached.name.endswith("-f16.gguf")
    reader = gguf.GGUFReader(cached)
    assert reader.fields["general.architecture"].contents() == "qwen2"
    assert "Traceback" not in first.stderr
    stamp = cached.stat().st_mtime_ns
    out = tmp_path / "export"
    out.mkdir()
    second = convert(str(dots_tiny), "--quant", "F16", "--output", str(out), data_dir=data)
    assert second.returncode == 0, second.stderr
    copied = Path(second.stdout.strip())
    assert copied == out / cached.name and copied.read_bytes() == cached.read_bytes()
    assert cached.stat().st_mtime_ns == stamp  # the cached file was reused
    assert "Writing the decoder" not in second.stderr
    assert sorted(p.name for p in out.iterdir()) == [cached.name]  # no temporary file left beside it


@pytest.mark.parametrize(("args", "message"), [
    (["--quant", "q3"], "dotocr: Unknown GGUF type 'q3'; choose one of f32, f16, q8_0, q4_k_m.\n"),
    (["--output", "/nonexistent/dir/x.gguf"], "dotocr: The folder /nonexistent/dir does not exist"),
])
def test_bad_requests_get_one_line(tmp_path, dots_tiny, args, message):
    result = convert(str(dots_tiny), *args, data_dir=tmp_path / "data")
    assert result.returncode == 1
    assert result.stderr.startswith(message), result.stderr  # said at once, before any conversion
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_model_folder(tmp_path):
    result = convert(str(tmp_path / "nope"), data_dir=tmp_path / "data")
    assert result.returncode == 1
    assert result.stderr.startswith(f"dotocr: The model folder {tmp_path / 'nope'} does not exist")
    assert len(result.stderr.strip().splitlines()) == 1
