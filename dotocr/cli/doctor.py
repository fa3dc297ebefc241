"""`dotocr doctor`: one command that says what is wrong with this machine's setup, and how to fix it.

Each check is a small function returning a `Check`; one that crashes becomes a FAIL line naming the
crash rather than ending the report, since a broken install is exactly when doctor must still run.
Nothing here downloads, registers a hotkey, or touches the clipboard's content.

Doctor asks the engine rather than guessing: the GPU as `describe_cuda` sees it, the device and precision
`plan_load` would choose (and why), the model by `describe_checkpoint`'s rules, a remote server through the
remote engine's own `load()`. So doctor and `dotocr ocr` never disagree. Secrets (API keys, tokens) are
masked in every report, plain or JSON: reports get pasted into bug trackers.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dotocr.config import Settings, SettingsError, SettingsFile, data_dir, setting_sources, settings_from_args
from dotocr.engine import (
    LLAMACPP_INSTALL_HINT,
    LoadPlan,
    PrecisionError,
    cached_gguf_problem,
    cpu_prefers_bf16,
    describe_checkpoint,
    describe_cuda,
    describe_llamacpp,
    gguf_path,
    make_engine,
    plan_load,
)
from dotocr.errors import DotOCRError, one_line

OK, INFO, WARN, FAIL = "ok", "info", "warn", "fail"
DOTS_REPO_PREFIX = "rednote-hilab/dots."
CUDA_WHEEL_INDEX = "https://download.pytorch.org/whl/cu128"
CUDA_INSTALL_COMMAND = f"pip uninstall -y torch, then: pip install torch --index-url {CUDA_WHEEL_INDEX}"
SAMPLE_LINES = ("Invoice 4721 paid in full", "Quick brown foxes jump")
SAMPLE_MIN_SHARE = 0.8
"""Share of the sample's words that must come back: the real model reads this clean render exactly;
the margin only forgives a stray punctuation or case slip."""
SAMPLE_MAX_NEW_TOKENS = 48
SECRET_SETTINGS = ("remote_api_key",)
"""Settings whose values are the user's alone: masked in every report, plain and JSON."""
SECRET_ENV = ("DOTOCR_API_TOKEN", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
MASK = "<set, hidden>"


@dataclass
class Check:
    key: str
    """Stable identifier for scripts and bug reports: python, torch, gpu, ..."""
    title: str
    status: str
    summary: str
    advice: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    settings: Settings
    settings_file: SettingsFile
    args: argparse.Namespace
    _cuda: dict[str, Any] | None = None

    def cuda(self) -> dict[str, Any]:
        """The engine's own description of the GPU (`describe_cuda`), asked once; no GPU if torch is broken."""
        if self._cuda is None:
            try:
                self._cuda = describe_cuda()
            except Exception as exc:  # no torch, or a CUDA install that raises: the torch check says which
                self._cuda = {"built": False, "available": False, "name": None, "total_bytes": 0,
                              "free_bytes": 0, "bf16": False, "error": one_line(exc)}
        return self._cuda

    def plan(self) -> LoadPlan:
        """What loading would choose for these settings; `PrecisionError` when it would refuse."""
        return plan_load(self.settings, cuda=self.cuda())

    def plan_or_none(self) -> LoadPlan | None:
        try:
            return self.plan()
        except DotOCRError:
            return None


CheckFunction = Callable[[Context], Check]


# -- the checks -----------------------------------------------------------------------------------

def check_python(ctx: Context) -> Check:
    version = platform.python_version()
    details = {"version": version, "executable": sys.executable,
               "implementation": platform.python_implementation()}
    return Check("python", "Python", OK, f"{version} ({sys.executable})", details=details)


def check_os(ctx: Context) -> Check:
    details = {"system": platform.system(), "release": platform.release(), "version": platform.version(),
               "machine": platform.machine(), "platform": platform.platform()}
    return Check("os", "OS", INFO, f"{platform.platform()} ({platform.machine()})", details=details)


def torch_build_verdict(system: str, cuda_build: str | None,
                        nvidia_driver: bool) -> tuple[str, str, str | None]:
    """(status, summary, advice) for the installed torch build.

    A CPU-only torch on Windows is the most common install mistake: pip's default torch wheel there
    has no CUDA, and the GPU sits idle while OCR crawls on the CPU.
    """
    if cuda_build:
        return OK, f"CUDA {cuda_build} build", None
    advice = f"Install the CUDA build of torch: {CUDA_INSTALL_COMMAND}"
    if system == "Windows":
        return WARN, "CPU-only build: OCR will run on the CPU, slowly", advice
    if nvidia_driver:
        return WARN, "CPU-only build although an NVIDIA driver is installed", advice
    return INFO, "CPU-only build (no NVIDIA GPU found, so that fits)", None


def check_torch(ctx: Context) -> Check:
    try:
        import torch
    except ImportError as exc:
        return Check("torch", "torch", FAIL, f"not importable ({one_line(exc)})",
                     f"Install torch first (with CUDA: pip install torch --index-url {CUDA_WHEEL_INDEX}).")
    cuda = ctx.cuda()
    nvidia_driver = shutil.which("nvidia-smi") is not None
    status, summary, advice = torch_build_verdict(platform.system(), torch.version.cuda, nvidia_driver)
    details = {"version": torch.__version__, "cuda_build": torch.version.cuda, "cuda_available": cuda["available"],
               "nvidia_smi": nvidia_driver, "threads": torch.get_num_threads()}
    if cuda["built"] and not cuda["available"]:
        status, summary = WARN, f"CUDA {torch.version.cuda} build, but no usable CUDA device"
        advice = "Check the NVIDIA driver (nvidia-smi) is installed and new enough for this CUDA build."
    return Check("torch", "torch", status, f"{torch.__version__}: {summary}", advice, details)


def check_gpu(ctx: Context) -> Check:
    cuda = ctx.cuda()
    if not cuda["available"]:
        return Check("gpu", "GPU", INFO, "no CUDA GPU: the model runs on the CPU", details=_gpu_details(cuda))
    summary = (f"{cuda['name']}, {cuda['free_bytes'] / 2**30:.1f} GiB free of {cuda['total_bytes'] / 2**30:.1f} GiB"
               f", bf16 {'supported' if cuda['bf16'] else 'not supported'}")
    return Check("gpu", "GPU", OK, summary, details=_gpu_details(cuda))


def check_plan(ctx: Context) -> Check:
    """What loading would choose with these settings, and why: the engine's own `plan_load` decides."""
    settings = ctx.settings
    if settings.engine == "remote":
        return Check("plan", "Device plan", INFO, f"the remote engine: the model runs at {settings.remote_url}",
                     details={"engine": "remote"})
    details: dict[str, Any] = {"device": settings.device, "precision": settings.precision}
    try:
        plan = ctx.plan()
    except PrecisionError as exc:  # the very sentence `dotocr ocr` stops with
        return Check("plan", "Device plan", FAIL, str(exc), details=details)
    details["plan"] = asdict(plan)
    summary = f"{plan.precision} on {plan.device} ({plan.reason})"
    if (settings.device, settings.precision) != ("auto", "auto"):
        try:
            auto = plan_load(settings.replace(device="auto", precision="auto"), cuda=ctx.cuda())
        except PrecisionError:  # auto always has a plan; a broken CUDA probe is reported above
            auto = None
        if auto is not None:
            details["auto"] = asdict(auto)
            summary += f"; auto would choose {auto.precision} on {auto.device}"
    elif settings.device == "auto":
        summary = "auto chooses " + summary
    return Check("plan", "Device plan", OK, summary, details=details)


def check_bf16(ctx: Context) -> Check:
    cuda = ctx.cuda()
    if cuda["available"]:
        if cuda["bf16"]:
            return Check("bf16", "bf16", OK, "supported by the GPU", details={"cuda": True})
        return Check("bf16", "bf16", INFO, "not supported by this GPU: fp16 or 4-bit are used instead",
                     details={"cuda": False})
    faster = cpu_prefers_bf16()  # measured once per CPU and remembered, exactly as `auto` decides
    return Check("bf16", "bf16", OK, f"{'bf16' if faster else 'fp32'} measured faster on this CPU",
                 details={"cpu_prefers_bf16": faster})


def four_bit_roundtrip(device: str) -> float:
    """Quantize a small Linear layer to NF4 with bitsandbytes, run it, and return the cosine
    similarity to the unquantized layer's output (close to 1 when 4-bit really works)."""
    import bitsandbytes as bnb
    import torch

    generator = torch.Generator().manual_seed(0)
    reference = torch.nn.Linear(64, 32)
    with torch.no_grad():
        reference.weight.copy_(torch.randn(32, 64, generator=generator) / 8)
        reference.bias.zero_()
    compute = torch.float16 if device == "cuda" else torch.float32
    layer = bnb.nn.Linear4bit(64, 32, compute_dtype=compute, quant_type="nf4")
    layer.weight = bnb.nn.Params4bit(reference.weight.data.clone(), requires_grad=False, quant_type="nf4")
    layer.bias = torch.nn.Parameter(reference.bias.data.clone(), requires_grad=False)
    layer = layer.to(device)
    if not getattr(layer.weight, "bnb_quantized", False):
        raise RuntimeError("the weights were not quantized")
    x = torch.randn(4, 64, generator=generator)
    with torch.no_grad():
        expected = reference(x)
        got = layer(x.to(device, compute)).float().cpu()
    return float(torch.nn.functional.cosine_similarity(expected.flatten(), got.flatten(), dim=0))


def check_bitsandbytes(ctx: Context) -> Check:
    plan = ctx.plan_or_none()
    wants_4bit = ctx.settings.precision == "4bit" or (plan is not None and plan.precision == "4bit")
    missing = FAIL if wants_4bit else WARN
    with _captured_logs("bitsandbytes") as notes:
        try:
            import bitsandbytes as bnb
        except Exception as exc:  # bitsandbytes raises RuntimeError, OSError, ... on a broken install
            return Check("bitsandbytes", "bitsandbytes", missing, f"not importable ({one_line(exc)})",
                         "4-bit needs it: pip install bitsandbytes", {"log": notes})
        device = "cuda" if ctx.cuda()["available"] else "cpu"
        try:
            similarity = four_bit_roundtrip(device)
        except Exception as exc:  # any failure here means 4-bit is unusable; say how it failed
            return Check("bitsandbytes", "bitsandbytes", missing,
                         f"{bnb.__version__}, but 4-bit does not work on {device} ({one_line(exc)})",
                         "Reinstall it (pip install -U bitsandbytes) or use --precision fp16 / --device cpu.",
                         {"version": bnb.__version__, "device": device, "log": notes})
    details = {"version": bnb.__version__, "device": device, "cosine_similarity": round(similarity, 4),
               "log": notes}
    if similarity < 0.95:
        return Check("bitsandbytes", "bitsandbytes", missing,
                     f"{bnb.__version__}, 4-bit on {device} gives wrong numbers "
                     f"(similarity {similarity:.3f})",
                     "Reinstall bitsandbytes (pip install -U bitsandbytes).", details)
    return Check("bitsandbytes", "bitsandbytes", OK, f"{bnb.__version__}, 4-bit NF4 works on {device}",
                 details=details)


LLAMACPP_CUDA_HINT = ('set CMAKE_ARGS="-DGGML_CUDA=on" (the CUDA toolkit installed), then pip install '
                      '"llama-cpp-python==0.3.36" --no-binary llama-cpp-python --no-cache-dir --force-reinstall')


def check_llamacpp(ctx: Context) -> Check:
    """The llama.cpp decoder's library: installed, the pinned version, and whether it can use the GPU."""
    wanted = ctx.settings.decoder == "llamacpp" and ctx.settings.engine != "remote"
    info = describe_llamacpp()
    version, pinned = info["version"], info["pinned"]
    missing = FAIL if wanted else INFO
    if version is None:
        return Check("llamacpp", "llama.cpp", missing, "llama-cpp-python is not installed: the torch decoder is used",
                     f"For 3-4x faster decoding on a CPU: {LLAMACPP_INSTALL_HINT}", info)
    if version != pinned:
        return Check("llamacpp", "llama.cpp", FAIL if wanted else WARN,
                     f"llama-cpp-python {version} is installed, but dotocr's bindings are written for {pinned}: "
                     "the torch decoder is used", LLAMACPP_INSTALL_HINT, info)
    if not info["gguf"]:
        return Check("llamacpp", "llama.cpp", missing, f"llama-cpp-python {version}, but the gguf package is missing",
                     LLAMACPP_INSTALL_HINT, info)
    if info["error"]:
        return Check("llamacpp", "llama.cpp", FAIL if wanted else WARN, f"llama-cpp-python {version} does not load "
                     f"({info['error']})", f"Reinstall it: {LLAMACPP_INSTALL_HINT}", info)
    if info["gpu_offload"]:
        return Check("llamacpp", "llama.cpp", OK, f"llama-cpp-python {version}, with GPU offload", details=info)
    if ctx.cuda()["available"]:
        return Check("llamacpp", "llama.cpp", INFO, f"llama-cpp-python {version} without GPU support: on this GPU "
                     "auto uses the torch decoder", f"For llama.cpp on the GPU: {LLAMACPP_CUDA_HINT}", info)
    return Check("llamacpp", "llama.cpp", OK, f"llama-cpp-python {version} (CPU)", details=info)


def check_gguf(ctx: Context) -> Check:
    """The llama.cpp decoder's cached GGUF, checked as the engine checks it before each use (nothing is moved)."""
    plan = ctx.plan_or_none() if ctx.settings.engine != "remote" else None
    if plan is None or plan.decoder != "llamacpp" or plan.gguf_type is None:
        return Check("gguf", "GGUF cache", INFO, "not used: the plan runs no llama.cpp decoder here")
    folder = describe_checkpoint(ctx.settings.model).path
    if folder is None:
        return Check("gguf", "GGUF cache", INFO, f"a {plan.gguf_type} GGUF is written once the model is downloaded")
    try:
        path = gguf_path(folder, plan.gguf_type)
        problem = cached_gguf_problem(path)
    except (DotOCRError, OSError) as exc:
        return Check("gguf", "GGUF cache", WARN, f"could not be checked ({one_line(exc)})")
    details = {"path": str(path), "gguf_type": plan.gguf_type, "problem": problem}
    if problem is not None:
        return Check("gguf", "GGUF cache", WARN, f"{path} {problem}",
                     f"The next run sets it aside and writes it again (minutes); or delete {path} now.", details)
    if not path.is_file():
        return Check("gguf", "GGUF cache", INFO, f"the {plan.gguf_type} GGUF is not written yet: the first run "
                     f"writes {path} (1-6 GB, minutes), or dotocr convert-gguf does it now", details=details)
    return Check("gguf", "GGUF cache", OK, f"{path} is whole ({path.stat().st_size / 2**20:,.0f} MiB)",
                 details=details)


def check_transformers(ctx: Context) -> Check:
    try:
        import transformers
    except Exception as exc:
        return Check("transformers", "transformers", FAIL, f"not importable ({one_line(exc)})",
                     "pip install 'transformers>=5,<6'")
    version = transformers.__version__
    major = int(re.match(r"\d+", version).group()) if re.match(r"\d+", version) else 0
    if major < 5:
        return Check("transformers", "transformers", FAIL, f"{version} is too old (dotocr needs 5.x)",
                     "pip install -U 'transformers>=5,<6'", {"version": version})
    return Check("transformers", "transformers", OK, version, details={"version": version})


def dots_checkpoints_in_cache(cache_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Every rednote-hilab/dots.* model in the Hugging Face cache, read from disk only."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(cache_dir)
    except CacheNotFound:
        return []
    found = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or not repo.repo_id.lower().startswith(DOTS_REPO_PREFIX):
            continue
        complete = any(_has_weights(Path(rev.snapshot_path)) for rev in repo.revisions)
        found.append({"repo_id": repo.repo_id, "size_mb": round(repo.size_on_disk / 2**20),
                      "revisions": len(repo.revisions), "complete": complete, "path": str(repo.repo_path)})
    return found


def check_cache(ctx: Context) -> Check:
    from huggingface_hub import constants

    cache = constants.HF_HUB_CACHE
    found = dots_checkpoints_in_cache(cache)
    details = {"cache_dir": cache, "endpoint": constants.ENDPOINT, "offline": bool(constants.HF_HUB_OFFLINE),
               "checkpoints": found}
    if not found:
        return Check("cache", "Model cache", INFO, f"{cache}: no dots checkpoints downloaded yet",
                     details=details)
    names = ", ".join(f"{c['repo_id']} ({c['size_mb'] / 1024:.1f} GiB"
                      + ("" if c["complete"] else ", incomplete") + ")" for c in found)
    return Check("cache", "Model cache", OK, f"{cache}: {names}", details=details)


def check_model(ctx: Context) -> Check:
    """Whether the configured model can be had without surprises, by the engine's own rules: a folder that
    holds a checkpoint, or a repo id already cached (otherwise the first run downloads it)."""
    from huggingface_hub.constants import HF_HUB_OFFLINE

    model = ctx.settings.model
    info = describe_checkpoint(model)
    details: dict[str, Any] = {"model": model, "kind": info.kind,
                               "path": str(info.path) if info.path is not None else None}
    if info.problem:
        return Check("model", "Model", FAIL, info.problem, details=details)
    if info.kind == "folder":
        assert info.path is not None
        return _check_model_folder(model, info.path, details)
    if info.path is not None:
        if _has_weights(info.path):
            return Check("model", "Model", OK, f"{model}: downloaded", details=details)
        return Check("model", "Model", WARN, f"{model}: partly downloaded",
                     "The next start resumes the download; keep the network up until it finishes.", details)
    if HF_HUB_OFFLINE:
        return Check("model", "Model", FAIL,
                     f"{model}: not downloaded, and offline mode (HF_HUB_OFFLINE) is on",
                     "Download it once online, or pass a local checkpoint folder with --model.", details)
    return Check("model", "Model", INFO,
                 f"{model}: not downloaded yet; the first start downloads it (a few GB)",
                 "Offline? Download it elsewhere and pass --model FOLDER.", details)


def _check_model_folder(model: str, folder: Path, details: dict[str, Any]) -> Check:
    """The contents the loader will need, read without loading: a config of the right type and weights."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return Check("model", "Model", FAIL, f"{model}: config.json is unreadable ({one_line(exc)})",
                     "Point --model at the folder that holds config.json and the .safetensors files.", details)
    details["model_type"] = config.get("model_type") if isinstance(config, dict) else None
    if not _has_weights(folder):
        return Check("model", "Model", FAIL, f"{model}: no .safetensors weights in the folder",
                     "Copy the checkpoint's model*.safetensors files into it.", details)
    if details["model_type"] != "dots_ocr":
        return Check("model", "Model", WARN, f"{model}: model_type is {details['model_type']!r}, not 'dots_ocr'",
                     "dotocr loads dots.ocr checkpoints only.", details)
    return Check("model", "Model", OK, f"{model}: local checkpoint folder", details=details)


def check_settings(ctx: Context) -> Check:
    settings_file = ctx.settings_file
    sources = setting_sources(ctx.args, settings_file)
    details = {"path": str(settings_file.path), "exists": settings_file.path.exists(),
               "problems": list(settings_file.problems), "broken": settings_file.broken,
               "data_dir": str(data_dir()), "settings": ctx.settings.to_dict(), "sources": sources}
    if settings_file.problems:
        summary = f"{settings_file.path}: " + " ".join(settings_file.problems)
        return Check("settings", "Settings", WARN, summary,
                     "Fix the file (or the variable) by hand; dotocr never overwrites a file it could not read.",
                     details)
    where = "" if details["exists"] else " (not created yet: defaults apply)"
    this_run = [f"{key} from the {source}" for key, source in sources.items() if source.startswith(("flag", "env"))]
    return Check("settings", "Settings", OK, f"{settings_file.path}{where}"
                 + (f"; {', '.join(this_run)}" if this_run else ""), details=details)


def check_hotkey(ctx: Context) -> Check:
    try:
        from dotocr.desktop.hotkey import get_hotkey_backend, parse_hotkey
    except Exception as exc:  # the tray's optional parts may be missing on a server-only install
        return Check("hotkey", "Hotkey", WARN, f"hotkey support cannot be imported ({one_line(exc)})")
    details: dict[str, Any] = {"hotkey": ctx.settings.hotkey}
    try:
        parse_hotkey(ctx.settings.hotkey)
    except ValueError as exc:
        return Check("hotkey", "Hotkey", FAIL, f"the hotkey setting {ctx.settings.hotkey!r} is invalid",
                     one_line(exc), details)
    try:
        backend = get_hotkey_backend()
    except Exception as exc:  # HotkeyError names the fix; anything else is still a finding
        return Check("hotkey", "Hotkey", WARN, f"no global hotkey here: {one_line(exc)}", details=details)
    details["backend"] = _backend_name(backend)
    return Check("hotkey", "Hotkey", OK, f"{ctx.settings.hotkey} via {details['backend']}", details=details)


def check_clipboard(ctx: Context) -> Check:
    try:
        from dotocr.desktop.clipboard import get_clipboard
    except Exception as exc:
        return Check("clipboard", "Clipboard", WARN,
                     f"clipboard support cannot be imported ({one_line(exc)})")
    try:
        clipboard = get_clipboard()
    except Exception as exc:  # a missing xclip/xsel: the message names what to install
        return Check("clipboard", "Clipboard", WARN, one_line(exc))
    name = _backend_name(clipboard)
    return Check("clipboard", "Clipboard", OK, name, details={"backend": name})


def check_server(ctx: Context) -> Check:
    from dotocr.cli.server_probe import probe_server

    settings = ctx.settings
    port = settings.api_port
    details: dict[str, Any] = {"port": port, "engine": settings.engine,
                               "api_token_set": bool(os.environ.get("DOTOCR_API_TOKEN"))}
    if settings.engine == "remote":
        details["remote_url"] = settings.remote_url
        engine = make_engine(settings)  # the remote engine's own check: GET /models with our key, then /health
        try:
            engine.load()
            kind = engine.server_kind  # dotocr, vllm, llama.cpp, ollama or openai
        except DotOCRError as exc:
            return Check("server", "Server", FAIL, f"the remote engine is not usable: {exc}",
                         "Start that server, or set engine = \"local\" in the settings file.", details)
        finally:
            engine.unload()
        details["remote"] = {"device": engine.device, "precision": engine.precision, "server": kind}
        return Check("server", "Server", OK, f"the remote engine at {settings.remote_url} answers "
                     f"({kind} server; {engine.device}, {engine.precision})", details=details)
    server = probe_server(port, timeout=1.0)
    if server is None:
        return Check("server", "Server", INFO,
                     f"no dotocr server on 127.0.0.1:{port}; `dotocr ocr` loads the model itself", details=details)
    details.update(asdict(server))
    if server.status == "ready":
        return Check("server", "Server", OK,
                     f"dotocr server ready at {server.describe()}, model {server.model}",
                     details=details)
    return Check("server", "Server", WARN if server.status == "error" else INFO,
                 f"dotocr server at {server.base_url} is {server.status}", details=details)


def render_sample() -> Any:
    """A clean two-line text sample, black on white, big enough for any sane model to read."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font: Any = ImageFont.load_default(size=40)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or no FreeType: the small bitmap font
        font = ImageFont.load_default()
    image = Image.new("RGB", (720, 150), "white")
    draw = ImageDraw.Draw(image)
    for row, line in enumerate(SAMPLE_LINES):
        draw.text((24, 20 + row * 60), line, fill="black", font=font)
    return image


def words_found(expected: str, text: str) -> tuple[list[str], list[str]]:
    """(found, missing) words of `expected` in `text`, case-insensitive, punctuation ignored."""
    have = set(re.findall(r"\w+", text.lower()))
    words = re.findall(r"\w+", expected.lower())
    return [w for w in words if w in have], [w for w in words if w not in have]


def check_ocr(ctx: Context) -> Check:
    from dotocr.cli.engine_choice import choose_engine
    from dotocr.cli.quiet import quiet_libraries
    from dotocr.errors import DotOCRError

    notes: list[str] = []
    if not getattr(ctx.args, "verbose", False):
        quiet_libraries(keep_download_bars=sys.stderr.isatty())
    settings = ctx.settings.replace(prompt="text", output_format="text")
    started = time.perf_counter()
    try:
        engine = choose_engine(settings, local=bool(getattr(ctx.args, "local", False)), notice=notes.append)
        engine.load()
        result = engine.ocr(render_sample(), prompt="text", output_format="text",
                            max_new_tokens=min(settings.max_new_tokens, SAMPLE_MAX_NEW_TOKENS))
    except DotOCRError as exc:
        return Check("ocr", "OCR sample", FAIL, f"the model could not run: {one_line(exc)}",
                     details={"model": settings.model, "notes": notes})
    expected = " ".join(SAMPLE_LINES)
    found, missing = words_found(expected, result.text)
    share = len(found) / max(1, len(found) + len(missing))
    details = {"model": settings.model, "expected": expected, "text": result.text, "found": found,
               "missing": missing, "stop_reason": result.stop_reason, "device": result.device,
               "precision": result.precision, "generated_tokens": result.generated_tokens,
               "timings": result.timings, "seconds": round(time.perf_counter() - started, 2), "notes": notes}
    where = f"{result.device}/{result.precision}, {result.timings.get('total', 0.0):.1f} s"
    if share >= SAMPLE_MIN_SHARE:
        return Check("ocr", "OCR sample", OK,
                     f"read {len(found)} of {len(found) + len(missing)} words ({where})",
                     details=details)
    answer = result.text.strip().replace("\n", " ")
    answer = (answer[:60] + "...") if len(answer) > 60 else answer
    return Check("ocr", "OCR sample", FAIL,
                 f"read only {len(found)} of {len(found) + len(missing)} words of the sample ({where}); "
                 f"the model answered {answer!r}",
                 "The model ran but does not read: check that --model points at real dots.ocr weights.",
                 details)


CHECKS: tuple[CheckFunction, ...] = (
    check_python, check_os, check_torch, check_gpu, check_bf16, check_plan, check_bitsandbytes, check_llamacpp,
    check_gguf, check_transformers, check_cache, check_model, check_settings, check_hotkey, check_clipboard,
    check_server,
)


# -- running and reporting ------------------------------------------------------------------------

def run_checks(ctx: Context, checks: tuple[CheckFunction, ...]) -> list[Check]:
    """Every check's result, secrets masked."""
    secrets = secret_values(ctx.settings)
    results = []
    for check in checks:
        try:
            result = check(ctx)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # a broken install must not stop the report: the crash is the finding
            name = check.__name__.removeprefix("check_")
            result = Check(name, name, FAIL, f"the check itself failed: {type(exc).__name__}: {one_line(exc)}")
        results.append(Check(result.key, result.title, result.status, masked(result.summary, secrets),
                             masked(result.advice, secrets), masked(result.details, secrets)))
    return results


# -- secrets ----------------------------------------------------------------------------------------------

_SECRET_KEY = re.compile(r"(^|_)(api_key|api_token|token|secret|password)$", re.IGNORECASE)
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")
MIN_SECRET_LENGTH = 4
"""Shorter values are not searched for in free text (they would blank out ordinary words); keys holding
them are still masked."""


def secret_values(settings: Settings) -> list[str]:
    """The secrets this run knows: API keys in the settings and tokens in the environment."""
    values = [str(getattr(settings, name, "") or "") for name in SECRET_SETTINGS]
    values += [os.environ.get(name, "") for name in SECRET_ENV]
    return sorted({v for v in values if len(v) >= MIN_SECRET_LENGTH}, key=len, reverse=True)


def masked(value: Any, secrets: list[str]) -> Any:
    """`value` with every secret hidden: values under secret-sounding keys, the secrets themselves wherever
    they appear in text, and credentials inside URLs."""
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, MASK)
        return _URL_CREDENTIALS.sub(MASK + "@", value)
    if isinstance(value, dict):
        return {k: (MASK if value[k] and isinstance(k, str) and _SECRET_KEY.search(k) else masked(value[k], secrets))
                for k in value}
    if isinstance(value, (list, tuple)):
        return [masked(v, secrets) for v in value]
    return value


def run_doctor(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    settings_file = SettingsFile()
    base = settings_file.load()
    try:
        settings = settings_from_args(args, base, settings_file.problems)
    except SettingsError as exc:
        parser.error(str(exc))
    if getattr(args, "verbose", False):
        logging.basicConfig(level=logging.INFO, format="dotocr: %(message)s", stream=sys.stderr)
    ctx = Context(settings, settings_file, args)
    checks = CHECKS + ((check_ocr,) if args.ocr else ())
    if args.json:
        results = run_checks(ctx, checks)
        print(json.dumps(report_dict(results), indent=2, ensure_ascii=False, default=str))
    else:
        print(f"dotocr doctor (dotocr {_version()})")
        results = []
        for check in checks:  # print as we go: the GPU and OCR checks can take a while
            (result,) = run_checks(ctx, (check,))
            results.append(result)
            print(format_check(result), flush=True)
        print(format_counts(results))
    return 1 if any(c.status == FAIL for c in results) else 0


def report_dict(results: list[Check]) -> dict[str, Any]:
    return {"dotocr": _version(), "ok": not any(c.status == FAIL for c in results),
            "counts": _counts(results), "checks": [asdict(c) for c in results]}


def format_check(check: Check) -> str:
    line = f"{check.status.upper():<5} {check.title:<13} {check.summary}"
    if check.advice:
        line += f"\n{'':<20}-> {check.advice}"
    return line


def format_counts(results: list[Check]) -> str:
    counts = _counts(results)
    return ", ".join(f"{counts[s]} {s.upper()}" for s in (OK, INFO, WARN, FAIL))


def _counts(results: list[Check]) -> dict[str, int]:
    return {s: sum(1 for c in results if c.status == s) for s in (OK, INFO, WARN, FAIL)}


# -- small helpers --------------------------------------------------------------------------------

def _has_weights(folder: Path) -> bool:
    try:
        return any(p.suffix == ".safetensors" for p in folder.iterdir())
    except OSError:
        return False


def _gpu_details(cuda: dict[str, Any]) -> dict[str, Any]:
    details = {k: v for k, v in cuda.items() if not k.endswith("_bytes")}
    details.update(total_mb=round(cuda["total_bytes"] / 2**20), free_mb=round(cuda["free_bytes"] / 2**20))
    return details


def _backend_name(backend: Any) -> str:
    return str(getattr(backend, "name", None) or type(backend).__name__)


@contextmanager
def _captured_logs(name: str) -> Iterator[list[str]]:
    """Collect a library's log records into the report instead of letting them spray stderr."""
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(one_line(Exception(record.getMessage())))

    logger = logging.getLogger(name)
    handler, propagate = Collect(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _version() -> str:
    from dotocr import __version__

    return __version__
