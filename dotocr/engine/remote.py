"""`RemoteEngine`: the engine interface, with the model on an OpenAI-compatible server elsewhere.

The server can be dots.ocr's vLLM server (`vllm serve rednote-hilab/dots.ocr ...`), another dotocr-serve,
llama.cpp's `llama-server -m text.gguf --mmproj mmproj.gguf`, or Ollama. The image is loaded and sized here
exactly as the local engine sizes it (dots.ocr's own rule, within max_image_size when set), so the server's
own processor leaves it as it is and any boxes in the answer are in pixels we can map back. The request is
the one dots.ocr's own client sends: the image as a PNG data URL, then the instruction. vLLM and dotocr-serve
want `<|img|><|imgpad|><|endofimg|>` before the instruction to mark the image; llama.cpp and Ollama put the
image markers in themselves where the image part stands (first), so they get the instruction alone. Which
kind of server it is comes from probing on connect (`SERVER_KINDS`). The answer is streamed, so `on_text`
works, watched by the loop guard (a server without one would otherwise run a loop to max_new_tokens), and
post-processed like a local answer.

Every failure of the network or the server is a `RemoteEngineError` naming the server and what to check.

Nothing a server sends is trusted to be small or to end: every body is read within a byte limit (MAX_BODY_BYTES,
an answer's stream within BYTES_PER_TOKEN for each token asked for), every line within MAX_LINE_BYTES, the whole
answer within `answer_timeout_s`, and an answer that runs past `max_new_tokens` pieces is cut there, whatever
the server does with the limit it was sent. Compressed bodies are not asked for (a gzip bomb would inflate past
any limit before it could be counted) and refused when sent anyway. A malformed answer is one sentence.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import httpx

from ..config import Settings
from ..errors import DotOCRError, RemoteEngineError
from ..loopback import is_loopback_url
from .answers.cells import without_lone_surrogates
from .base import Call, Engine, Generated
from .decoders.loop_guard import LoopGuard
from .inputs.preprocessing import ImagePreparer, PreparedImage
from .inputs.prompts import IMAGE_PLACEHOLDER
from .model.spellings import END_OF_ANSWER
from .status import EngineState, Status

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger("dotocr.engine.remote")

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 3600.0
"""Longest wait for the next piece of the answer: a request waiting in a busy server's line gets no bytes until
its turn (dotocr-serve's own deadline is an hour by default), and a dense page's prefill can be long."""
MAX_CONNECTIONS = 256
"""Enough for `dotocr ocr --concurrency` at its maximum: requests never wait for a free connection."""
BUSY_RETRY_S = 60.0
"""How long a request keeps retrying while the server answers 503 (loading, or its queue is full)."""
MAX_ERROR_BODY = 4096
MAX_BODY_BYTES = 8 * 1024 * 1024
"""Largest body read whole: a model list, a probe's answer, an answer that is not streamed."""
MAX_LINE_BYTES = 1024 * 1024
"""Longest line of a streamed answer: one event carries one token, a few hundred bytes."""
BYTES_PER_TOKEN = 4096
"""A streamed answer may take this many bytes per token asked for (plus one line): ten times what servers send."""
ANSWER_TIMEOUT_S = READ_TIMEOUT_S
"""Longest a whole answer may take, waiting in a busy server's line included (a trickle never ends otherwise)."""

DOTOCR, VLLM, LLAMA_CPP, OLLAMA, OPENAI = "dotocr", "vllm", "llama.cpp", "ollama", "openai"
SERVER_KINDS = (DOTOCR, VLLM, LLAMA_CPP, OLLAMA, OPENAI)
"""What answers at remote_url, as far as the request needs to know: dotocr-serve and vLLM (and any other
OpenAI server, taken to be vLLM-like) read the image placeholder in the text; llama.cpp and Ollama place
the image themselves."""
PLACES_IMAGE_ITSELF = (LLAMA_CPP, OLLAMA)
NO_VISION = ("image input is not supported",  # llama-server started without --mmproj (its server-common.cpp)
             "missing data required for image input")  # Ollama, a model imported without its vision part


class RemoteEngine(Engine):
    """Thread-safe; several threads may have requests in flight at once (a serving engine batches them).
    Connects on `load()` or `ocr()`."""

    def __init__(self, settings: Settings, *, on_state: Callable[[EngineState], None] | None = None,
                 read_timeout_s: float = READ_TIMEOUT_S, busy_retry_s: float = BUSY_RETRY_S,
                 answer_timeout_s: float = ANSWER_TIMEOUT_S) -> None:
        super().__init__(settings, on_state=on_state)
        self._read_timeout_s = read_timeout_s
        self._answer_timeout_s = answer_timeout_s
        self._busy_retry_s = busy_retry_s
        self._client: httpx.Client | None = None
        self._preparer = ImagePreparer()  # sizing only: the server cuts the patches
        self._precision: str | None = None
        self._remote_device: str | None = None
        self._lock = threading.RLock()
        self._in_flight = 0
        self._api = self.url
        self._kind = OPENAI
        self._model = settings.remote_model

    # -- state --------------------------------------------------------------------------------------

    def _set_ready(self, detail: str) -> None:
        self._set_state(Status.READY, detail, device=self._remote_device or "remote",
                        precision=self._precision or "unknown", decoder="remote")

    @property
    def url(self) -> str:
        return self._settings.remote_url.rstrip("/")

    @property
    def server_kind(self) -> str | None:
        """One of SERVER_KINDS once connected (None before): what `load()` found at remote_url."""
        return self._kind if self._client is not None else None

    # -- lifecycle ----------------------------------------------------------------------------------

    def load(self) -> None:
        """Check that the server answers (GET /models) with our key and can read images; RemoteEngineError
        if not."""
        with self._lock:
            self._ensure_connected()

    def unload(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
            self._set_state(Status.UNLOADED, "disconnected; connects again on the next capture")

    def reconfigure(self, settings: Settings) -> None:
        with self._lock:
            old, self._settings = self._settings, settings
            if (old.remote_url, old.remote_api_key, old.remote_model) != (
                    settings.remote_url, settings.remote_api_key, settings.remote_model):
                self.unload()

    def _ensure_connected(self) -> httpx.Client:
        if self._client is not None:
            return self._client
        self._set_state(Status.LOADING, f"connecting to {self.url}")
        key = self._settings.remote_api_key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        headers["Accept-Encoding"] = "identity"  # see the module docstring: no body grows past its limit unseen
        # A proxy must never see loopback traffic (it would get the key and the image): HTTP_PROXY and
        # friends are ignored for a server on this machine.
        client = httpx.Client(headers=headers, trust_env=not is_loopback_url(self.url), timeout=httpx.Timeout(
            self._read_timeout_s, connect=CONNECT_TIMEOUT_S, pool=CONNECT_TIMEOUT_S),
            limits=httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=32))
        try:
            self._api, served = self._find_api(client)
            self._kind, self._remote_device, self._precision = self._probe(client, served)
            self._model = self._pick_model(served)
        except DotOCRError as exc:
            client.close()
            self._set_state(Status.ERROR, str(exc))
            raise
        log.info("%s is a %s server; asking for model %r", self.url, self._kind, self._model)
        self._client = client
        self._set_ready(f"remote {self.url}")
        return client

    def _find_api(self, client: httpx.Client) -> tuple[str, list[dict[str, Any]]]:
        """(the API's base URL, the models it lists): remote_url itself, or remote_url + /v1 when only that
        answers (Ollama's own address, http://127.0.0.1:11434, has the OpenAI API under /v1)."""
        candidates = [self.url] if self.url.endswith("/v1") else [self.url, self.url + "/v1"]
        for base in candidates:
            response = self._get_waiting(client, f"{base}/models")
            if response.status_code == 404:
                continue
            self._raise_for_status(response)
            data = _json_or_none(response.content)
            listed = data.get("data") if isinstance(data, dict) else None
            if isinstance(listed, list):
                return base, [m for m in listed if isinstance(m, dict)]
        raise RemoteEngineError(
            f"{self.url} is not an OpenAI-compatible API (GET /v1/models gave no model list); point "
            "remote_url at llama-server, Ollama, vLLM or dotocr-serve, e.g. http://127.0.0.1:8080/v1.")

    def _get_waiting(self, client: httpx.Client, url: str) -> httpx.Response:
        """GET, retried while the server answers 503 (llama-server and dotocr-serve while loading the model)."""
        deadline = time.monotonic() + self._busy_retry_s
        while True:
            response = self._send(client, "GET", url, timeout=CONNECT_TIMEOUT_S * 2)
            if response.status_code != 503 or time.monotonic() >= deadline:
                return response
            wait = _retry_after(response)
            log.info("%s is loading or busy; asking again in %.1f s", self.url, wait)
            time.sleep(min(wait, max(0.0, deadline - time.monotonic())))

    def _probe(self, client: httpx.Client, served: list[dict[str, Any]]) -> tuple[str, str, str]:
        """(server kind, device, precision): dotocr-serve says what it runs in /health; llama-server says in
        /props whether a vision projector is loaded; Ollama answers /api/version. Others say nothing."""
        root = self._api[:-3] if self._api.endswith("/v1") else self._api
        owners = {str(m.get("owned_by", "")) for m in served}
        if "llamacpp" in owners:
            props = self._get_json(client, f"{root}/props")
            if isinstance(props, dict) and isinstance(props.get("modalities"), dict) \
                    and props["modalities"].get("vision") is False:
                raise RemoteEngineError(self._no_vision_sentence(LLAMA_CPP))
            return LLAMA_CPP, "remote", "unknown"
        health = self._get_json(client, f"{root}/health")
        if isinstance(health, dict) and health.get("service") == "dotocr":
            if health.get("precision"):
                return DOTOCR, f"remote {health.get('device') or 'unknown'}", str(health["precision"])
            return DOTOCR, "remote", "unknown"  # still loading its model
        if "vllm" in owners:
            return VLLM, "remote", "unknown"
        version = self._get_json(client, f"{root}/api/version")
        if isinstance(version, dict) and isinstance(version.get("version"), str) and len(version) == 1:
            return OLLAMA, "remote", "unknown"
        return OPENAI, "remote", "unknown"

    def _get_json(self, client: httpx.Client, url: str) -> Any:
        """The JSON a GET answers with, or None for anything else (a probe is allowed to miss)."""
        with contextlib.suppress(httpx.HTTPError, httpx.InvalidURL, RemoteEngineError):
            response = self._fetch(client, "GET", url, timeout=CONNECT_TIMEOUT_S)
            if response.status_code == 200:
                return _json_or_none(response.content)
        return None

    def _pick_model(self, served: list[dict[str, Any]]) -> str:
        """remote_model when the server lists it (or lists nothing); the one model it lists otherwise (llama-server
        and a one-model Ollama name theirs after the file); with several, remote_model must name one."""
        wanted = self._settings.remote_model
        names = [str(m["id"]) for m in served if isinstance(m.get("id"), str)]
        if not names or wanted in names or self._kind == DOTOCR:  # dotocr-serve takes any name
            return wanted
        if len(names) == 1:
            return names[0]
        shown = ", ".join(repr(n) for n in names[:8]) + (", ..." if len(names) > 8 else "")
        raise RemoteEngineError(f"The OCR server at {self.url} serves {shown}, not {wanted!r}; set remote_model "
                                "to the dots.ocr one.")

    def _no_vision_sentence(self, kind: str) -> str:
        if kind == LLAMA_CPP:
            return (f"The llama-server at {self.url} has no vision model loaded, so it cannot read images; "
                    "start it with --mmproj and the dots.ocr mmproj GGUF (dotocr convert-gguf writes one).")
        return (f"The OCR server at {self.url} runs {self._model!r} without its vision part, so it cannot read "
                "images; serve a dots.ocr model that includes the vision projector.")

    # -- OCR ----------------------------------------------------------------------------------------

    def _generate(self, picture: Image.Image, call: Call) -> Generated:
        """The generation happens on the server. `call.should_stop` is asked after every streamed piece (closing
        the stream stops a dotocr server's generation); `max_prompt_tokens` is left to the server, which counts
        with its own tokenizer."""
        prepared = self._preparer.prepare(picture, call.max_image_size, patches=False)
        instruction = call.instruction_for(prepared)
        with self._lock:
            client = self._ensure_connected()
            body = self._request_body(prepared, instruction, call.max_new_tokens, call.temperature, call.top_p,
                                      call.system)
            self._in_flight += 1
            self._set_state(Status.BUSY, "reading", device=self._remote_device or "remote",
                            precision=self._precision or "unknown", decoder="remote")
        try:
            answer = self._complete(client, body, call, time.perf_counter())
        except RemoteEngineError as exc:
            with self._lock:
                self._in_flight -= 1
                self._set_state(Status.ERROR, str(exc))
            raise
        with self._lock:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._set_ready(f"remote {self.url}")
        return Generated(
            prepared=prepared, raw=answer.text, kept=answer.kept_text,
            stop_reason=_stop_reason(answer.finish_reason),
            prompt_tokens=_first_int(answer.prompt_tokens, prepared.image_tokens),
            generated_tokens=_first_int(answer.completion_tokens, answer.pieces), prepared_at=answer.sent_at,
            first_token_at=answer.first_at, finished_at=answer.done_at, device=self._remote_device or "remote",
            precision=self._precision or "unknown", decoder="remote", loop_start=answer.loop_start)

    # -- the HTTP exchange --------------------------------------------------------------------------

    def _request_body(self, prepared: PreparedImage, instruction: str, max_new_tokens: int,
                      temperature: float, top_p: float, system: str | None = None) -> dict[str, Any]:
        png = io.BytesIO()
        prepared.image.save(png, format="PNG")
        data_url = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode("ascii")
        messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system is not None else []
        # The image first, as dots.ocr was trained; llama.cpp and Ollama put <|img|>...<|endofimg|> where the
        # image part stands, vLLM and dotocr-serve where the placeholder stands.
        text = instruction if self._kind in PLACES_IMAGE_ITSELF else IMAGE_PLACEHOLDER + instruction
        messages.append({"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url}},
            {"type": "text", "text": text},
        ]})
        extra: dict[str, Any] = {}
        if self._kind == OLLAMA:  # its GGUF may not mark the end of an answer as the end of generation
            extra["stop"] = [END_OF_ANSWER]
        return {
            **extra,
            "model": self._model,
            "messages": messages,
            "max_completion_tokens": max_new_tokens,
            "max_tokens": max_new_tokens,  # servers that predate max_completion_tokens
            "temperature": temperature,
            "top_p": top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }

    def _complete(self, client: httpx.Client, body: dict[str, Any], call: Call, sent_at: float) -> _Answer:
        deadline = time.monotonic() + self._busy_retry_s
        answer_deadline = time.monotonic() + self._answer_timeout_s
        while True:
            try:
                with client.stream("POST", f"{self._api}/chat/completions", json=body) as response:
                    if response.status_code == 503 and time.monotonic() < deadline:
                        wait = _retry_after(response)
                        log.info("%s is busy or loading; retrying in %.1f s", self.url, wait)
                    else:
                        self._raise_for_status(response)
                        return self._read_answer(response, call, sent_at, answer_deadline)
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                raise self._network_error(exc) from None
            time.sleep(min(wait, max(0.0, deadline - time.monotonic())))

    def _read_answer(self, response: httpx.Response, call: Call, sent_at: float, deadline: float) -> _Answer:
        # dotocr-serve guards with the real token ids; for the others, each streamed piece stands for a token
        answer = _Answer(sent_at, guard=self._kind != DOTOCR)
        limit = call.max_new_tokens * BYTES_PER_TOKEN + MAX_LINE_BYTES
        if "text/event-stream" not in response.headers.get("content-type", ""):  # a server that ignores stream
            data = _json_or_none(self._read_body(response, min(limit, MAX_BODY_BYTES), deadline))
            if data is None:
                raise RemoteEngineError(f"The OCR server at {self.url} answered with something that is not JSON; "
                                        "check that remote_url points at an OpenAI-compatible server.")
            answer.take_completion(data, self.url)
            if call.on_text is not None and answer.text:
                call.on_text(answer.text)
            return answer.finish()
        for line in self._lines(response, limit, deadline):
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                return answer.finish()
            event = _json_or_none(data)
            if not isinstance(event, dict) or not isinstance(event.get("choices", []), list):
                raise RemoteEngineError(f"The OCR server at {self.url} sent a stream event that is not a chat "
                                        "completion chunk; check that remote_url points at an OpenAI-compatible "
                                        "server.")
            if "error" in event:
                raise RemoteEngineError(self._server_failed(_error_message(event), "failed"))
            delta = answer.take_chunk(event)
            if answer.finish_reason == "repetition":  # closing the stream stops the server's generation
                log.info("%s fell into a loop; stopped after %d pieces", self.url, answer.pieces)
                return answer.finish()
            if answer.pieces > call.max_new_tokens:  # the server ignored the limit it was sent
                log.info("%s sent more than %d pieces; the answer is cut there", self.url, call.max_new_tokens)
                answer.cut(call.max_new_tokens)
                return answer.finish()
            if delta and call.on_text is not None:
                call.on_text(delta)
            if call.should_stop is not None and call.should_stop():
                answer.finish_reason = "cancelled"
                return answer.finish()
        if answer.finish_reason is None:
            raise RemoteEngineError(f"The OCR server at {self.url} closed the connection before the answer "
                                    "was complete; check the server's log.")
        return answer.finish()

    # -- reading within limits ------------------------------------------------------------------------------

    def _raw_chunks(self, response: httpx.Response, limit: int, deadline: float) -> Iterator[bytes]:
        """The body as it arrives, undecoded: more than `limit` bytes, or past `deadline`, is an error."""
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise RemoteEngineError(f"The OCR server at {self.url} sent a {encoding}-compressed answer although "
                                    "none was asked for; check that remote_url points at an OpenAI-compatible "
                                    "server.")
        received = 0
        for chunk in response.iter_raw():
            received += len(chunk)
            if received > limit:
                raise RemoteEngineError(f"The OCR server at {self.url} sent more than {_size(limit)} for one "
                                        "answer; check that remote_url points at an OpenAI-compatible server.")
            if time.monotonic() > deadline:
                raise RemoteEngineError(f"The OCR server at {self.url} did not finish its answer within "
                                        f"{self._answer_timeout_s:g} s; check that it is not overloaded.")
            yield chunk

    def _read_body(self, response: httpx.Response, limit: int, deadline: float) -> bytes:
        return b"".join(self._raw_chunks(response, limit, deadline))

    def _lines(self, response: httpx.Response, limit: int, deadline: float) -> Iterator[bytes]:
        """The stream's lines (without their end), each at most MAX_LINE_BYTES, in time linear in the stream."""
        pending = bytearray()
        for chunk in self._raw_chunks(response, limit, deadline):
            start = 0
            while (end := chunk.find(b"\n", start)) >= 0:
                line = bytes(pending) + chunk[start:end] if pending else chunk[start:end]
                pending.clear()
                yield line.rstrip(b"\r")
                start = end + 1
            pending += chunk[start:]
            if len(pending) > MAX_LINE_BYTES:
                raise RemoteEngineError(f"The OCR server at {self.url} sent a line longer than "
                                        f"{_size(MAX_LINE_BYTES)}; check that remote_url points at an "
                                        "OpenAI-compatible server.")
        if pending:
            yield bytes(pending).rstrip(b"\r")

    def _fetch(self, client: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """A request whose body is read within MAX_BODY_BYTES (and, for an error, far less)."""
        deadline = time.monotonic() + self._answer_timeout_s
        with client.stream(method, url, **kwargs) as response:
            limit = MAX_ERROR_BODY * 4 if response.status_code >= 400 else MAX_BODY_BYTES
            content = self._read_body(response, limit, deadline)
        return httpx.Response(response.status_code, headers=response.headers, content=content,
                              request=response.request)

    def _send(self, client: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._fetch(client, method, url, **kwargs)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise self._network_error(exc) from None

    def _network_error(self, exc: httpx.HTTPError | httpx.InvalidURL) -> RemoteEngineError:
        if isinstance(exc, httpx.TimeoutException):
            what = "connect" if isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout)) else "answer"
            return RemoteEngineError(f"The OCR server at {self.url} did not {what} in time; check that it is "
                                     "running and not overloaded.")
        if isinstance(exc, httpx.ConnectError):
            return RemoteEngineError(f"Cannot reach the OCR server at {self.url}; check that it is running "
                                     "and that remote_url is right.")
        if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
            return RemoteEngineError(f"remote_url {self.url!r} is not a usable URL; use one like "
                                     "http://127.0.0.1:8000/v1.")
        return RemoteEngineError(f"The connection to the OCR server at {self.url} failed "
                                 f"({type(exc).__name__}); try again, or check the server.")

    def _raise_for_status(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        content = b""
        with contextlib.suppress(httpx.HTTPError, RemoteEngineError):  # an error's body, read within its limit
            content = response.content if response.is_stream_consumed else self._read_body(
                response, MAX_ERROR_BODY * 4, time.monotonic() + CONNECT_TIMEOUT_S * 2)
        text = without_lone_surrogates(content[:200].decode("utf-8", "replace")).strip()
        message = _error_message(_json_or_none(content)) or text or response.reason_phrase
        if response.status_code in (401, 403):
            raise RemoteEngineError(f"The OCR server at {self.url} refused the request (HTTP "
                                    f"{response.status_code}: {message}); set remote_api_key to its token.")
        if response.status_code == 404 and "model" in message.lower():
            raise RemoteEngineError(f"The OCR server at {self.url} has no model "
                                    f"{self._model!r} ({message}); set remote_model to the "
                                    "name it serves (GET /v1/models).")
        raise RemoteEngineError(self._server_failed(message, f"answered HTTP {response.status_code}"))

    def _server_failed(self, message: str, how: str) -> str:
        """The sentence for an error the server sent: ours for the ones we know the cure of, else its own."""
        lowered = message.lower()
        if any(sign in lowered for sign in NO_VISION):
            return self._no_vision_sentence(self._kind)
        if "exceeds the available context size" in lowered:  # llama-server's wording
            return (f"The image needs more tokens than the llama-server at {self.url} has room for ({message}); "
                    "start it with a larger --ctx-size, or lower max_image_size.")
        message = message.strip() or "no reason given"
        return f"The OCR server at {self.url} {how}: {message}" + ("" if message.endswith(".") else ".")


def _stop_reason(finish_reason: str | None) -> str:
    """OpenAI's finish_reason as our stop_reason: "length" is max_new_tokens; "stop" (and the rest) eos."""
    if finish_reason in ("cancelled", "repetition"):
        return finish_reason
    return "max_new_tokens" if finish_reason == "length" else "eos"


class _Answer:
    """What came back: the text, why it stopped, token counts and when each part arrived.

    With `guard`, the loop guard watches the streamed pieces, each as a token (the same text, the same id):
    servers stream one token per piece, so its thresholds, set in tokens, hold. A loop it sees ends the
    answer with finish_reason "repetition"; `kept_text` is then the text before the loop plus one copy of its
    block, as the local engine keeps it."""

    def __init__(self, sent_at: float, *, guard: bool = False) -> None:
        self.parts: list[str] = []
        self.pieces = 0
        self._guard = LoopGuard() if guard else None
        self._ids: dict[str, int] = {}
        self._piece_ids: list[int] = []
        self.kept: int | None = None
        """With a loop: how many pieces the answer keeps (those before the loop and one copy of its block)."""
        self.loop_start: int | None = None
        self.finish_reason: str | None = None
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.sent_at = sent_at
        self.first_at: float | None = None
        self.done_at = sent_at

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def kept_text(self) -> str:
        return self.text if self.kept is None else "".join(self.parts[:self.kept])

    def take_chunk(self, event: Any) -> str:
        if not isinstance(event, dict):
            return ""
        self._take_usage(event.get("usage"))
        delta_text = ""
        for choice in event.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str) and content:
                content = without_lone_surrogates(content)  # no UTF-8 answer of ours could carry one
                if self.first_at is None:
                    self.first_at = time.perf_counter()
                self.parts.append(content)
                self.pieces += 1
                delta_text += content
                if self._looped(content):
                    return ""
            if isinstance(choice.get("finish_reason"), str) and choice["finish_reason"]:
                self.finish_reason = choice["finish_reason"][:40]
        return delta_text

    def cut(self, pieces: int) -> None:
        """Keep the first `pieces` pieces: the server sent more than it was asked for."""
        del self.parts[pieces:]
        self.pieces = pieces
        self.finish_reason = "length"
        if self.kept is not None:
            self.kept = min(self.kept, pieces)

    def _looped(self, piece: str) -> bool:
        if self._guard is None:
            return False
        token = self._ids.setdefault(piece, len(self._ids))
        self._piece_ids.append(token)
        if not self._guard.push(token):
            return False
        self.kept = len(self._guard.keep(self._piece_ids))
        self.loop_start = self._guard.loop_start
        self.finish_reason = "repetition"
        return True

    def take_completion(self, data: Any, url: str) -> None:
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise RemoteEngineError(f"The OCR server at {url} answered without a choice; check that it serves "
                                    "dots.ocr.")
        message = choices[0].get("message") or {}
        content = message.get("content") if isinstance(message, dict) else None
        self.first_at = time.perf_counter()
        if isinstance(content, str):
            self.parts.append(without_lone_surrogates(content))
            self.pieces = 1
        reason = choices[0].get("finish_reason")
        self.finish_reason = reason[:40] if isinstance(reason, str) and reason else "stop"
        self._take_usage(data.get("usage"))

    def _take_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            if isinstance(usage.get("prompt_tokens"), int):
                self.prompt_tokens = usage["prompt_tokens"]
            if isinstance(usage.get("completion_tokens"), int):
                self.completion_tokens = usage["completion_tokens"]

    def finish(self) -> _Answer:
        self.done_at = time.perf_counter()
        if self.first_at is None:
            self.first_at = self.done_at
        if self.finish_reason is None:
            self.finish_reason = "stop"
        return self


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(10.0, max(0.2, float(response.headers.get("retry-after", "1"))))
    except ValueError:
        return 1.0


def _json_or_none(content: bytes) -> Any:
    try:
        return json.loads(content)
    except (ValueError, RecursionError):  # not JSON, a number of thousands of digits, nesting past the stack
        return None


def _size(count: int) -> str:
    return f"{count / 2**20:g} MiB" if count >= 2**20 else f"{count / 1024:g} KiB"


def _first_int(value: int | None, fallback: int) -> int:
    return value if value is not None else fallback


def _error_message(data: Any) -> str:
    """The sentence in an error body, in OpenAI's, vLLM's or FastAPI's shape."""
    if not isinstance(data, dict):
        return ""
    error = data.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str) and error["message"]:
        return without_lone_surrogates(error["message"][:MAX_ERROR_BODY])
    for key in ("message", "detail"):
        if isinstance(data.get(key), str):
            return without_lone_surrogates(data[key][:MAX_ERROR_BODY])
    return without_lone_surrogates(error[:MAX_ERROR_BODY]) if isinstance(error, str) else ""
