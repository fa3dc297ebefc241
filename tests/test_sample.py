"""The README's first command (issue 17, item 6): `dotocr ocr docs/sample.png` reads the bundled sample picture;
where the model hub cannot be reached it says so in one sentence, with what to do."""

from __future__ import annotations

import re
import sys

from PIL import Image

from dotocr.engine.inputs.codes import read_codes
from tests.cli_helpers import REPO, free_port, run_dotocr
from tests.tiny_models import save_answer_checkpoint

SAMPLE = REPO / "docs" / "sample.png"


def test_the_sample_is_a_small_screenshot_like_png():
    with Image.open(SAMPLE) as picture:
        assert picture.format == "PNG" and picture.size == (640, 360)
        assert not read_codes(picture.convert("RGB")).codes  # nothing in it looks like a bar code
    assert SAMPLE.stat().st_size < 32_000
    assert "dotocr ocr docs/sample.png" in (REPO / "README.md").read_text(encoding="utf-8")


def isolated(tmp_path, **extra: str) -> dict[str, str]:
    """No settings file, an empty Hugging Face cache, and no dotocr server to hand the work to."""
    return {"HF_HOME": str(tmp_path / "hf"), "DOTOCR_CONFIG": str(tmp_path / "settings.toml"),
            "DOTOCR_DATA_DIR": str(tmp_path / "data"), "DOTOCR_API_PORT": str(free_port()),
            "HF_HUB_OFFLINE": "0", **extra}


def test_without_the_hub_the_first_command_says_in_one_sentence_what_to_do(tmp_path):
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there: the hub is unreachable
    done = run_dotocr("ocr", "docs/sample.png", env=isolated(tmp_path, HF_ENDPOINT=closed), timeout=120)
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    line = lines[0]
    assert line == (f"dotocr: The model rednote-hilab/dots.ocr cannot be downloaded from {closed} (no connection to "
                    "it); check the network or set HF_ENDPOINT to a mirror, or download the checkpoint elsewhere and "
                    "pass its folder with --model.")
    assert len(re.findall(r"[.!?](\s|$)", line)) == 1 and "Traceback" not in line


def test_with_a_model_at_hand_the_first_command_prints_the_text(tmp_path, dots_tiny):
    model = save_answer_checkpoint(tmp_path / "model", dots_tiny, ["Weekly order\n", "Total: 21.15"])
    done = run_dotocr("ocr", "docs/sample.png", "--model", str(model), "--device", "cpu", "--precision", "fp32",
                      "--local", env=isolated(tmp_path), timeout=180)
    assert done.returncode == 0, done.stderr
    newline = "\r\n" if sys.platform == "win32" else "\n"  # a Windows console or pipe gets Windows line ends
    assert done.stdout == f"Weekly order{newline}Total: 21.15{newline}"
