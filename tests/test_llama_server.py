"""The remote engine against llama.cpp's own `llama-server`, for real: loopback HTTP, tiny checkpoints.

llama-server is built from the llama.cpp that llama-cpp-python vendors (scripts/build_llama_server.sh) and
found through DOTOCR_LLAMA_SERVER or that script's cache. Without it these tests skip on a developer's
machine and fail in CI (CI=true), where .ci/run builds it.

Each server runs a text GGUF (`ensure_gguf`) and, unless a test wants it missing, the vision tower as an
mmproj GGUF (`ensure_mmproj`), both F32. Two kinds of checkpoint: the golden tiny one (its patch kernel in
BF16, as in the real model, so llama.cpp's vision matches ours exactly), whose noise answer must equal our
local engine's token for token; and scripted ones (tests/tiny_models.py) whose answer is known in advance:
"Text world" then <|endofassistant|>, or "Text world" round and round.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageDraw
from server_helpers import tiny_settings
from tiny_models import save_bf16_kernel_checkpoint, save_scripted_checkpoint

from dotocr.engine import DotOCRInference
from dotocr.engine.decoders.amx import cpu_has_amx
from dotocr.engine.gguf.convert import ensure_gguf, ensure_mmproj
from dotocr.engine.remote import RemoteEngine
from dotocr.errors import RemoteEngineError
from tests.cli_helpers import REPO, free_port, in_process_cli, text_image

pytestmark = pytest.mark.timeout(120)

ENV = "DOTOCR_LLAMA_SERVER"
ASSISTANT, END_OF_ANSWER, EOS = 1007, 1008, 978  # the golden tokenizer's ids
TEXT, WORLD = 337, 437  # "Text", " world"
SIZE = (224, 56)
"""Multiples of 28 inside [min_pixels, max_pixels] and under the cap: neither side resizes the image."""


def pinned_version() -> str:
    found = re.search(r'"llama-cpp-python==([0-9.]+)"', (REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert found, "pyproject.toml pins no llama-cpp-python version"
    return found.group(1)


def find_llama_server() -> tuple[Path | None, str]:
    """(the binary, or None and why not): DOTOCR_LLAMA_SERVER, else scripts/build_llama_server.sh's cache."""
    named = os.environ.get(ENV)
    if named:
        path = Path(named)
        if path.is_file() and os.access(path, os.X_OK):
            return path, ""
        return None, f"{ENV}={named} is not an executable file"
    cache = Path(os.environ.get("DOTOCR_BUILD_CACHE")
                 or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dotocr-build")
    built = sorted(cache.glob(f"llama-server-{pinned_version()}-*/llama-server"))
    if built:
        return built[-1], ""
    return None, f"no llama-server: set {ENV} or run scripts/build_llama_server.sh"


@pytest.fixture(scope="module")
def binary() -> Path:
    if sys.platform == "win32":
        pytest.skip("llama-server is built for Linux by scripts/build_llama_server.sh; a Windows build needs MSVC, "
                    "which the Windows lane (Windows Python under Wine) does not have")
    path, why = find_llama_server()
    if path is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{why} (CI must run these tests: .ci/run builds it)")
        pytest.skip(why)
    return path


@contextlib.contextmanager
def llama_server(binary: Path, model: Path, log: Path, *, mmproj: Path | None = None,
                 extra: tuple[str, ...] = ()) -> Iterator[str]:
    """`llama-server` on a free 127.0.0.1 port, ready (GET /health is 200); killed afterwards. Yields its URL."""
    port = free_port()
    command = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-c", "4096",
               "-np", "1", "-t", "2", "--no-webui", "--no-warmup", *extra]
    if mmproj is not None:
        command += ["--mmproj", str(mmproj)]
    if cpu_has_amx():  # another process: our AMX permission (amx.py) does not reach it, so no AMX buffers
        command.append("--no-repack")
    with open(log, "wb") as out:
        server = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, f"llama-server exited: {log.read_text(errors='replace')[-3000:]}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"llama-server not ready: {log.read_text(errors='replace')[-3000:]}"
            time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The F32 text GGUF and F32 mmproj of a checkpoint, written once per module."""
    directory = tmp_path_factory.mktemp("gguf")
    return lambda folder: (ensure_gguf(folder, "f32", directory=directory, progress=False),
                           ensure_mmproj(folder, "f32", directory=directory, progress=False))


@pytest.fixture(scope="module")
def golden(tmp_path_factory, dots_tiny: Path) -> Path:
    """The golden checkpoint with its patch kernel in BF16, as in the real model."""
    return save_bf16_kernel_checkpoint(tmp_path_factory.mktemp("golden-bf16-kernel"), dots_tiny)


@pytest.fixture(scope="module")
def scripted(tmp_path_factory, dots_tiny: Path) -> Path:
    """Answers "Text world" and stops."""
    return save_scripted_checkpoint(tmp_path_factory.mktemp("scripted"), dots_tiny,
                                    {ASSISTANT: TEXT, TEXT: WORLD, WORLD: END_OF_ANSWER})


@pytest.fixture(scope="module")
def scripted_url(binary, files, scripted, tmp_path_factory) -> Iterator[str]:
    text, mmproj = files(scripted)
    with llama_server(binary, text, tmp_path_factory.mktemp("log") / "scripted.log", mmproj=mmproj) as url:
        yield url


@pytest.fixture(scope="module")
def golden_url(binary, files, golden, tmp_path_factory) -> Iterator[str]:
    text, mmproj = files(golden)
    with llama_server(binary, text, tmp_path_factory.mktemp("log") / "golden.log", mmproj=mmproj) as url:
        yield url


@pytest.fixture
def cli(capsys):
    with in_process_cli(capsys) as run:
        yield run


def ocr_json(cli, image: Path, url: str, *flags: str) -> dict:
    done = cli("ocr", str(image), "--server", url, "--format", "json", *flags)
    assert done.returncode == 0, done.stderr
    assert f"using the remote engine at {url}" in done.stderr
    (line,) = done.stdout.splitlines()
    return json.loads(line)


# -- through `dotocr ocr --server` ---------------------------------------------------------------------------

def test_cli_reads_through_llama_server_and_stops_at_the_end_of_the_answer(cli, scripted_url, scripted,
                                                                          tmp_path):
    shot = text_image(tmp_path / "shot.png", SIZE)
    result = ocr_json(cli, shot, scripted_url)
    assert result["text"] == "Text world"
    assert result["stop_reason"] == "eos"  # at <|endofassistant|>, long before max_new_tokens
    here = DotOCRInference(tiny_settings(scripted, max_image_size=1024)).ocr(shot)
    assert (here.raw, here.stop_reason) == ("Text world", "eos")
    # llama-server's usage: the prompt counted with the image's tokens, the answer with its end token
    assert result["prompt_tokens"] == here.prompt_tokens
    assert result["generated_tokens"] == here.generated_tokens == 3
    assert (result["width"], result["height"]) == SIZE and result["decoder"] == "remote"


def test_max_new_tokens_is_honoured_with_stop_reason_length(cli, scripted_url, tmp_path):
    result = ocr_json(cli, text_image(tmp_path / "shot.png", SIZE), scripted_url, "--max-new-tokens", "1")
    assert (result["text"], result["stop_reason"], result["generated_tokens"]) == ("Text", "max_new_tokens", 1)


def test_the_answer_equals_our_local_engine_token_for_token(cli, golden_url, golden, tmp_path):
    """Greedy, F32 text GGUF and F32 mmproj against our engine (torch, and our hybrid with the llama.cpp decoder)
    on the same checkpoint and image."""
    locals_ = [DotOCRInference(tiny_settings(golden, max_image_size=1024, max_new_tokens=12, decoder=decoder))
               for decoder in ("torch", "auto")]  # auto: the llama.cpp decoder in process, when installed
    answers = set()
    box = (10, 5, 120, 40)
    for background, prompt in (("white", "text"), ("white", "layout-json"), ("navy", "text"),
                               ("white", "grounding")):
        shot = tmp_path / "shot.png"
        picture = Image.new("RGB", SIZE, background)
        ImageDraw.Draw(picture).text((4, 4), "Remote 42", fill="orange")
        picture.save(shot)
        flags = ["--bbox", ",".join(map(str, box))] if prompt == "grounding" else ["--prompt", prompt]
        result = ocr_json(cli, shot, golden_url, "--max-new-tokens", "12", *flags)
        for local in locals_:
            here = local.ocr(shot, prompt=prompt, bbox=box if prompt == "grounding" else None)
            assert result["raw"] == here.raw and len(here.raw) > 0
            assert (result["prompt_tokens"], result["generated_tokens"], result["stop_reason"]) == (
                here.prompt_tokens, here.generated_tokens, here.stop_reason)
        answers.add(here.raw)
    assert len(answers) == 4  # the instruction and the image both reach the model: the match means something


# -- the engine itself ---------------------------------------------------------------------------------------

def test_engine_knows_llama_server_and_streams(scripted_url):
    remote = RemoteEngine(tiny_settings(Path("unused"), engine="remote", remote_url=scripted_url))
    remote.load()
    assert remote.server_kind == "llama.cpp"
    pieces: list[str] = []
    result = remote.ocr(text_image_in_memory(), on_text=pieces.append)
    assert pieces == ["Text", " world"] and result.raw == "Text world"
    assert result.timings["total"] > 0


def test_a_loop_is_stopped_client_side(binary, files, dots_tiny, tmp_path):
    """llama-server has no loop guard: ours watches the stream and closes it, as the local engine would."""
    looping = save_scripted_checkpoint(tmp_path / "loop", dots_tiny, {ASSISTANT: TEXT, TEXT: WORLD, WORLD: TEXT})
    text, mmproj = files(looping)
    with llama_server(binary, text, tmp_path / "loop.log", mmproj=mmproj) as url:
        remote = RemoteEngine(tiny_settings(looping, engine="remote", remote_url=url, max_new_tokens=2000))
        started = time.monotonic()
        result = remote.ocr(text_image_in_memory())
        assert time.monotonic() - started < 30
    here = DotOCRInference(tiny_settings(looping, max_new_tokens=2000)).ocr(text_image_in_memory())
    assert result.stop_reason == here.stop_reason == "repetition"
    assert result.text == here.text == "Text world"  # one copy of the repeated block kept
    assert (result.raw, result.generated_tokens, result.loop_start) == (here.raw, here.generated_tokens,
                                                                       here.loop_start)
    assert result.raw.startswith("Text worldText world") and result.generated_tokens < 100
    # the logprobs follow the kept text, not everything streamed: a sure answer, as the local engine finds it
    assert [text for text, _ in result.pieces] == [text for text, _ in here.pieces] == ["Text", " world"]
    assert result.low_confidence == here.low_confidence == []


def text_image_in_memory():
    image = Image.new("RGB", SIZE, "white")
    ImageDraw.Draw(image).text((4, 4), "Hello 42", fill="black")
    return image


# -- llama-server as it is started wrongly -------------------------------------------------------------------

def test_llama_server_without_mmproj_is_one_sentence(binary, files, scripted, tmp_path, cli):
    text, _ = files(scripted)
    with llama_server(binary, text, tmp_path / "text-only.log") as url:
        with pytest.raises(RemoteEngineError) as caught:
            RemoteEngine(tiny_settings(scripted, engine="remote", remote_url=url)).load()
        message = str(caught.value)
        assert "--mmproj" in message and message.endswith(".") and "\n" not in message
        done = cli("ocr", str(text_image(tmp_path / "shot.png", SIZE)), "--server", url)
        assert done.returncode == 1 and "start it with --mmproj" in done.stderr and "Traceback" not in done.stderr
        # what llama-server itself says when an image is sent anyway, and the sentence we make of it
        image_part = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
        said = httpx.post(f"{url}/v1/chat/completions", json={"messages": [{"role": "user", "content": [
            image_part, {"type": "text", "text": "hi"}]}]}, timeout=30)
        assert said.status_code == 500 and "image input is not supported" in said.json()["error"]["message"]
        engine = RemoteEngine(tiny_settings(scripted, engine="remote", remote_url=url))
        engine._kind = "llama.cpp"  # as a server that hid /props would leave it after connecting
        assert "--mmproj" in engine._server_failed(said.json()["error"]["message"], "answered HTTP 500")


def test_the_gguf_marks_the_end_of_the_answer_as_end_of_generation(binary, files, scripted, tmp_path):
    """Text only, no image: our GGUF's eot token is what makes llama-server stop at <|endofassistant|>."""
    text, _ = files(scripted)
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 12, "temperature": 0}
    with llama_server(binary, text, tmp_path / "eot.log") as url:
        answer = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30).json()
    assert answer["choices"][0]["message"]["content"] == "Text world"
    assert answer["choices"][0]["finish_reason"] == "stop"
    # the same file with the end-of-turn entry pointed back at eos: llama.cpp writes on past the answer's end
    unmarked = ("--override-kv", f"tokenizer.ggml.eot_token_id=int:{EOS}")
    with llama_server(binary, text, tmp_path / "no-eot.log", extra=unmarked) as url:
        answer = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30).json()
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["choices"][0]["message"]["content"].startswith("Text world")


def test_an_image_too_big_for_the_context_is_one_sentence(binary, files, scripted, tmp_path):
    text, mmproj = files(scripted)
    with llama_server(binary, text, tmp_path / "small.log", mmproj=mmproj, extra=("-c", "128")) as url:
        remote = RemoteEngine(tiny_settings(scripted, engine="remote", remote_url=url, max_image_size=1024))
        with pytest.raises(RemoteEngineError) as caught:
            remote.ocr(Image.new("RGB", (448, 448), "white"))  # 256 image tokens in a 128-token context
    message = str(caught.value)
    assert "--ctx-size" in message and "max_image_size" in message and message.endswith(".")


def test_llama_server_with_an_api_key(binary, files, scripted, tmp_path):
    text, mmproj = files(scripted)
    with llama_server(binary, text, tmp_path / "key.log", mmproj=mmproj, extra=("--api-key", "s3cret")) as url:
        keyed = RemoteEngine(tiny_settings(scripted, engine="remote", remote_url=url, remote_api_key="s3cret"))
        assert keyed.ocr(text_image_in_memory()).text == "Text world"
        with pytest.raises(RemoteEngineError) as caught:
            RemoteEngine(tiny_settings(scripted, engine="remote", remote_url=url)).load()
    message = str(caught.value)
    assert "HTTP 401" in message and "remote_api_key" in message and "\n" not in message


# -- logprobs: where the model was unsure ------------------------------------------------------------------

THE, QUICK, BROWN, FOX, JUMPS = 336, 469, 465, 431, 467  # "The", " quick", " brown", " fox", " jumps"


def test_llama_servers_logprobs_mark_the_same_unsure_word_as_the_local_engine(binary, files, dots_tiny, tmp_path):
    """A scripted model unsure of ' brown' (against ' fox' and ' jumps'): llama-server's logprobs, streamed,
    give the remote engine the span the local engine finds."""
    chain = {ASSISTANT: THE, THE: QUICK, QUICK: BROWN, BROWN: END_OF_ANSWER}
    unsure = save_scripted_checkpoint(tmp_path / "unsure", dots_tiny, chain, doubt={QUICK: (FOX, JUMPS)})
    shot = text_image_in_memory()
    here = DotOCRInference(tiny_settings(unsure, max_image_size=1024)).ocr(shot, prompt="text")
    assert (here.text, here.low_confidence) == ("The quick brown", [[10, 15]])
    text, mmproj = files(unsure)
    with llama_server(binary, text, tmp_path / "unsure.log", mmproj=mmproj) as url:
        remote = RemoteEngine(tiny_settings(unsure, engine="remote", remote_url=url, max_image_size=1024))
        result = remote.ocr(shot, prompt="text")
        assert (result.text, result.low_confidence) == ("The quick brown", [[10, 15]])
        assert [round(p, 2) for _, p in result.pieces] == [round(p, 2) for _, p in here.pieces]
        cut = remote.ocr(shot, prompt="text", max_new_tokens=2)  # the pieces follow the text that is kept
        assert (cut.text, cut.low_confidence) == ("The quick", [])
