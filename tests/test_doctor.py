"""`dotocr doctor`, run for real on this machine: real torch, real bitsandbytes 4-bit, a real Hugging
Face cache layout on disk, the real tiny checkpoint for --ocr (which must fail honestly: its weights
are random, so it cannot read the sample)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dotocr.cli.doctor import (
    CUDA_WHEEL_INDEX,
    FAIL,
    INFO,
    MASK,
    OK,
    SAMPLE_LINES,
    WARN,
    Context,
    check_llamacpp,
    dots_checkpoints_in_cache,
    four_bit_roundtrip,
    masked,
    render_sample,
    torch_build_verdict,
    words_found,
)
from dotocr.config import Settings
from dotocr.engine import plan_load
from dotocr.engine.llamacpp_runtime import llamacpp_installed
from tests.cli_helpers import TINY, run_dotocr, text_image

SECTIONS = ["python", "os", "torch", "gpu", "bf16", "plan", "bitsandbytes", "llamacpp", "transformers", "cache",
            "model", "settings", "hotkey", "clipboard", "server"]
TITLES = ["Python", "OS", "torch", "GPU", "bf16", "Device plan", "bitsandbytes", "llama.cpp", "transformers",
          "Model cache", "Model", "Settings", "Hotkey", "Clipboard", "Server"]


def fake_hf_cache(root: Path) -> Path:
    """The on-disk layout huggingface_hub writes: blobs, a snapshot of links to them, a ref."""
    complete = {"config.json": b"{}", "model.safetensors": b"w" * 2048}
    for repo, files in (("models--rednote-hilab--dots.ocr", complete),
                        ("models--rednote-hilab--dots.mocr", {"config.json": b"{}"}),
                        ("models--someone--other-model", {"config.json": b"{}"})):
        blobs, snapshot = root / repo / "blobs", root / repo / "snapshots" / "0123abcd"
        blobs.mkdir(parents=True)
        snapshot.mkdir(parents=True)
        (root / repo / "refs").mkdir()
        (root / repo / "refs" / "main").write_text("0123abcd")
        for n, (name, data) in enumerate(files.items()):
            blob = blobs / f"blob{n}"
            blob.write_bytes(data)
            (snapshot / name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    return root


def doctor_json(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict]:
    done = run_dotocr("doctor", "--json", *args, env=env, timeout=240)
    assert "Traceback" not in done.stderr
    return done.returncode, json.loads(done.stdout)


# -- pure decisions ---------------------------------------------------------------------------------

def test_cpu_only_torch_on_windows_warns_with_the_pip_command():
    status, summary, advice = torch_build_verdict("Windows", None, nvidia_driver=False)
    assert status == WARN and "CPU-only" in summary
    assert f"pip install torch --index-url {CUDA_WHEEL_INDEX}" in advice
    assert torch_build_verdict("Linux", None, nvidia_driver=True)[0] == WARN
    assert torch_build_verdict("Linux", None, nvidia_driver=False)[0] == INFO
    assert torch_build_verdict("Windows", "12.8", nvidia_driver=True) == (OK, "CUDA 12.8 build", None)


def test_words_found_ignores_case_and_punctuation():
    found, missing = words_found("Invoice 4721 paid", "INVOICE #4721, unpaid")
    assert found == ["invoice", "4721"] and missing == ["paid"]


def test_sample_is_dark_text_on_white():
    image = render_sample().convert("L")
    histogram = image.histogram()
    assert histogram[255] > image.width * image.height * 0.8  # mostly white
    assert sum(histogram[:64]) > 500  # and real ink


@pytest.mark.timeout(60)
def test_four_bit_really_quantizes_and_runs_on_this_cpu():
    assert four_bit_roundtrip("cpu") > 0.95


def test_masking_hides_secret_keys_values_in_text_and_url_credentials():
    secrets = ["sk-live-0123456789"]
    report = {"settings": {"remote_api_key": "anything", "hotkey": "ctrl+alt+o", "api_token": ""},
              "generated_tokens": 12, "notes": ["sent sk-live-0123456789 to the server"],
              "url": "http://me:pass@host:8000/v1"}
    assert masked(report, secrets) == {
        "settings": {"remote_api_key": MASK, "hotkey": "ctrl+alt+o", "api_token": ""},
        "generated_tokens": 12, "notes": [f"sent {MASK} to the server"], "url": f"http://{MASK}@host:8000/v1"}


def test_cache_scan_lists_only_dots_checkpoints(tmp_path):
    found = dots_checkpoints_in_cache(fake_hf_cache(tmp_path / "hub"))
    assert [c["repo_id"] for c in found] == ["rednote-hilab/dots.mocr", "rednote-hilab/dots.ocr"]
    assert [c["complete"] for c in found] == [False, True]
    assert dots_checkpoints_in_cache(tmp_path / "no-such-cache") == []


@pytest.mark.parametrize(("decoder", "status"), [("auto", WARN), ("llamacpp", FAIL), ("torch", WARN)])
def test_another_llama_cpp_python_version_is_named_with_the_pin(tmp_path, monkeypatch, decoder, status):
    """A llama-cpp-python of another version, as Python's package metadata finds it first on the path."""
    import importlib

    info = tmp_path / "llama_cpp_python-0.3.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: llama_cpp_python\nVersion: 0.3.1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    check = check_llamacpp(Context(Settings(decoder=decoder), None, None))  # type: ignore[arg-type]
    assert check.status == status
    assert check.summary == ("llama-cpp-python 0.3.1 is installed, but dotocr's bindings are written for 0.3.36: "
                             "the torch decoder is used")
    assert check.advice is not None and "llama-cpp-python==0.3.36" in check.advice
    assert not llamacpp_installed()  # and the engine agrees: auto plans the torch decoder


# -- the real command -------------------------------------------------------------------------------

@pytest.mark.timeout(240)
def test_plain_report_has_every_section_and_a_verdict():
    done = run_dotocr("doctor", timeout=240)
    assert "Traceback" not in done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("dotocr doctor")
    reported = [line.split(None, 1)[1] for line in lines[1:] if line.split()[:1] and
                line.split()[0] in ("OK", "INFO", "WARN", "FAIL")]
    for title in TITLES:
        assert any(r.startswith(title + " ") for r in reported), title
    assert lines[-1].endswith("FAIL") and "OK" in lines[-1]
    has_fail = any(line.startswith("FAIL") for line in lines)
    assert done.returncode == (1 if has_fail else 0)


@pytest.mark.timeout(240)
def test_json_report_for_bug_reports(tmp_path):
    settings = tmp_path / "settings.toml"
    broken = 'model = "x"\nprecision = \n'
    settings.write_text(broken, encoding="utf-8")
    code, report = doctor_json(env={"HF_HUB_CACHE": str(fake_hf_cache(tmp_path / "hub")),
                                    "DOTOCR_CONFIG": str(settings)})
    checks = {c["key"]: c for c in report["checks"]}
    assert list(checks) == SECTIONS
    for check in report["checks"]:
        assert check["status"] in (OK, INFO, WARN, FAIL) and check["summary"]
    assert report["ok"] == (code == 0) == (report["counts"]["fail"] == 0)
    # what is certainly true of this test machine
    assert checks["python"]["status"] == OK and checks["python"]["details"]["version"].startswith("3.")
    assert checks["torch"]["details"]["version"] == __import__("torch").__version__
    assert checks["bitsandbytes"]["status"] == OK
    assert checks["bitsandbytes"]["details"]["cosine_similarity"] > 0.95
    assert checks["transformers"]["status"] == OK
    if llamacpp_installed():  # CI installs it
        assert checks["llamacpp"]["status"] == OK
        assert checks["llamacpp"]["summary"] == "llama-cpp-python 0.3.36 (CPU)"  # this build offloads nothing
    cached = [c["repo_id"] for c in checks["cache"]["details"]["checkpoints"]]
    assert cached == ["rednote-hilab/dots.mocr", "rednote-hilab/dots.ocr"]
    # the broken file gave defaults, so the model is the default repo id, found in the cache
    assert checks["model"]["status"] == OK
    assert "rednote-hilab/dots.ocr: downloaded" in checks["model"]["summary"]
    assert checks["server"]["details"]["port"] == 8765
    # what `auto` would choose here, and why: the engine's own decision, word for word
    plan = plan_load(Settings())
    assert checks["plan"]["status"] == OK and checks["plan"]["details"]["plan"]["reason"] == plan.reason
    assert checks["plan"]["summary"] == f"auto chooses {plan.precision} on {plan.device} ({plan.reason})"
    # the broken settings file: reported with its place, and left exactly as it was
    check = checks["settings"]
    assert check["status"] == WARN and str(settings) in check["summary"] and "line 2" in check["summary"]
    assert settings.read_text(encoding="utf-8") == broken


@pytest.mark.timeout(240)
def test_model_folder_that_is_not_a_checkpoint_fails(tmp_path):
    code, report = doctor_json("--model", str(tmp_path))
    check = next(c for c in report["checks"] if c["key"] == "model")
    assert check["status"] == FAIL and "config.json" in check["summary"]
    assert code == 1


@pytest.mark.timeout(300)
def test_ocr_on_the_tiny_random_model_fails_honestly():
    """The whole path runs (load, preprocess, generate on the CPU), but random weights cannot read the
    sample: doctor must say FAIL, show what came back, and exit 1."""
    code, report = doctor_json("--ocr", "--model", str(TINY), "--device", "cpu", "--precision", "fp32",
                               "--local")
    check = report["checks"][-1]
    assert check["key"] == "ocr"
    assert check["status"] == FAIL and code == 1
    details = check["details"]
    assert details["device"] == "cpu" and details["precision"] == "fp32"
    assert details["generated_tokens"] > 0 and details["timings"]["total"] > 0
    assert details["missing"] and details["expected"] == " ".join(SAMPLE_LINES)
    assert "the model answered" in check["summary"]


@pytest.mark.timeout(240)
def test_missing_model_fails_the_model_check_and_the_ocr_check():
    done = run_dotocr("doctor", "--ocr", "--model", "/nonexistent", "--device", "cpu", "--local", timeout=240)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stdout.splitlines()
    model = [line for line in lines if line[6:20].strip() == "Model"]  # "FAIL  Model         ..."
    assert len(model) == 1 and model[0].startswith("FAIL")
    assert "The model folder /nonexistent does not exist" in model[0]  # the engine's own sentence
    ocr = [line for line in lines if "OCR sample" in line]
    assert len(ocr) == 1 and ocr[0].startswith("FAIL") and "could not run" in ocr[0]
    assert "/nonexistent" in ocr[0]
    assert lines[-1].endswith("2 FAIL")


# -- the engine's flags and the user's secrets ---------------------------------------------------------------

@pytest.mark.timeout(240)
def test_device_cuda_without_cuda_fails_with_the_sentence_dotocr_ocr_gives(tmp_path):
    if __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA")
    ocr = run_dotocr("ocr", str(text_image(tmp_path / "small.png", (80, 30))), "--device", "cuda", "--local")
    assert ocr.returncode == 1 and ocr.stderr.startswith("dotocr: ")
    sentence = ocr.stderr.strip().removeprefix("dotocr: ")
    assert "CUDA" in sentence
    code, report = doctor_json("--device", "cuda")
    plan = next(c for c in report["checks"] if c["key"] == "plan")
    assert plan["status"] == FAIL and plan["summary"] == sentence
    assert code == 1 and report["ok"] is False


class RecordingOpenAIServer:
    """A real HTTP server on loopback that answers GET /v1/models like vLLM, and keeps the headers it got."""

    def __init__(self) -> None:
        import http.server
        import threading

        seen = self.authorizations = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                seen.append(self.headers.get("Authorization"))
                body = b'{"object": "list", "data": [{"id": "model"}]}' if self.path == "/v1/models" else b"{}"
                self.send_response(200 if self.path == "/v1/models" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.timeout(300)
def test_no_report_prints_any_part_of_a_key_or_token(tmp_path):
    key, token = "sk-q7f3xa9c2ze5b1d", "tk-x4e8qb6d0za2c"
    server = RecordingOpenAIServer()
    try:
        settings = tmp_path / "settings.toml"
        settings.write_text(f'engine = "remote"\nremote_url = "{server.url}"\nremote_api_key = "{key}"\n',
                            encoding="utf-8")
        env = {"DOTOCR_CONFIG": str(settings), "DOTOCR_API_TOKEN": token}
        plain = run_dotocr("doctor", env=env, timeout=240)
        code, report = doctor_json(env=env)
    finally:
        server.close()
    # the key was really used: doctor asked the server with it, through the remote engine
    assert f"Bearer {key}" in server.authorizations
    checks = {c["key"]: c for c in report["checks"]}
    assert checks["server"]["status"] == OK and server.url in checks["server"]["summary"]
    assert checks["settings"]["details"]["settings"]["remote_api_key"] == MASK
    assert checks["server"]["details"]["api_token_set"] is True
    text = plain.stdout + plain.stderr + json.dumps(report)
    for secret in (key, token):
        for start in range(0, len(secret) - 5):  # no piece of it either: any 6 characters in a row
            assert secret[start:start + 6] not in text


@pytest.mark.timeout(240)
def test_environment_variables_reach_the_plan_and_doctor_names_them(tmp_path):
    """DOTOCR_DEVICE and DOTOCR_PRECISION, as a shortcut or a service sets them, choose what runs; doctor says
    where each value came from, and a bad one is one sentence."""
    code, report = doctor_json(env={"DOTOCR_CONFIG": str(tmp_path / "settings.toml"), "DOTOCR_DEVICE": "cpu",
                                    "DOTOCR_PRECISION": "fp32", "DOTOCR_MAX_NEW_TOKENS": "lots"})
    checks = {c["key"]: c for c in report["checks"]}
    assert checks["plan"]["details"]["plan"]["precision"] == "fp32"
    sources = checks["settings"]["details"]["sources"]
    assert sources["precision"] == "environment DOTOCR_PRECISION" and sources["hotkey"] == "default"
    assert checks["settings"]["status"] == WARN
    assert "DOTOCR_MAX_NEW_TOKENS: max_new_tokens = 'lots' must be a whole number" in checks["settings"]["summary"]
