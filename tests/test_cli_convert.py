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
    cached, cached_mmproj = (Path(line) for line in first.stdout.splitlines())
    assert cached.parent == cached_mmproj.parent == data / "gguf"
    assert cached.name.endswith("-f16.gguf") and cached_mmproj.name.endswith("-bf16.gguf")
    assert gguf.GGUFReader(cached).fields["general.architecture"].contents() == "qwen2"
    assert gguf.GGUFReader(cached_mmproj).fields["clip.projector_type"].contents() == "dots_ocr"
    assert "Traceback" not in first.stderr
    stamps = [cached.stat().st_mtime_ns, cached_mmproj.stat().st_mtime_ns]
    out = tmp_path / "export"
    out.mkdir()
    second = convert(str(dots_tiny), "--quant", "F16", "--output", str(out), data_dir=data)
    assert second.returncode == 0, second.stderr
    copied = [Path(line) for line in second.stdout.splitlines()]
    assert copied == [out / cached.name, out / cached_mmproj.name]
    assert copied[0].read_bytes() == cached.read_bytes() and copied[1].read_bytes() == cached_mmproj.read_bytes()
    assert [cached.stat().st_mtime_ns, cached_mmproj.stat().st_mtime_ns] == stamps  # the cached files were reused
    assert "Writing the" not in second.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in copied)  # no temporary file left

    named = convert(str(dots_tiny), "--quant", "f16", "--mmproj-type", "f16", "--output", str(out / "mine.gguf"),
                    data_dir=data)
    assert named.stdout.splitlines() == [str(out / "mine.gguf"), str(out / "mmproj-mine.gguf")], named.stderr
    alone = convert(str(dots_tiny), "--quant", "f16", "--mmproj-type", "none", data_dir=data)
    assert alone.stdout.splitlines() == [str(cached)], alone.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--quant", "q3"], "dotocr: Unknown GGUF type 'q3'; choose one of f32, f16, q8_0, q4_k_m.\n"),
    (["--output", "/nonexistent/dir/x.gguf"], "dotocr: The folder /nonexistent/dir does not exist"),
    (["--mmproj-type", "q4"], "dotocr: Unknown mmproj type 'q4'; choose one of f32, bf16, f16.\n"),
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
