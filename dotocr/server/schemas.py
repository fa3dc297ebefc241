"""The JSON the server takes and gives, as pydantic models: they validate requests and write /docs.

Chat requests follow OpenAI's chat completions shape and keep unknown fields (clients send many we
do not use); responses carry the fields OpenAI clients read.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal, get_type_hints

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model

from dotocr.config import OUTPUT_FORMATS, PROMPT_MODES
from dotocr.engine import OCRResult


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: int


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    service: Literal["dotocr"] = "dotocr"
    status: Literal["loading", "ready", "error"]
    detail: str = ""
    engine_state: str
    """The engine's own status: unloaded, downloading, loading, ready, busy or error."""
    progress: float | None = None
    model: str
    device: str | None = None
    precision: str | None = None
    decoder: str | None = None
    """What generates the text once loaded: torch, llamacpp or remote."""
    gguf_type: str | None = None
    """With the llama.cpp decoder: the GGUF weight type."""
    engine: str
    version: str
    proof: str | None = None
    """HMAC of the request's challenge with this user's server secret (see dotocr.local_secret)."""


def _model_of(result: type, name: str, doc: str) -> type[BaseModel]:
    """A pydantic model with exactly the fields of the dataclass `result`, so the schema cannot drift from it."""
    hints = get_type_hints(result)
    spec: dict[str, Any] = {}
    for item in dataclasses.fields(result):
        if not item.metadata.get("json", True):
            continue
        if item.default is not dataclasses.MISSING:
            default: Any = item.default
        elif item.default_factory is not dataclasses.MISSING:
            default = Field(default_factory=item.default_factory)
        else:
            default = ...
        spec[item.name] = (hints[item.name], default)
    return create_model(name, __doc__=doc, **spec)


OCRResponse = _model_of(OCRResult, "OCRResponse", "Exactly `OCRResult.to_json_dict()`, the object `dotocr ocr "
                        "--format json` prints; `cells` only for the layout prompts, `page` and `dpi` only for PDF "
                        "pages, `codes` only where QR codes or bar codes were found.")


class DocumentResponse(BaseModel):
    """What POST /ocr answers for a PDF: one result per page read, in page order."""

    file: str | None = None
    page_count: int
    """Pages in the PDF (not all of them are read when `pages` chose some)."""
    pages: list[OCRResponse]  # type: ignore[valid-type]


OCR_FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {"type": "string", "format": "binary",
                 "description": "The image (PNG, JPEG, WebP, ...) or a PDF (a result per page)."},
        "prompt": {"type": "string", "enum": list(PROMPT_MODES),
                   "description": "What to ask the model; the server's setting when left out."},
        "format": {"type": "string", "enum": list(OUTPUT_FORMATS),
                   "description": "Form of `text`; the server's setting when left out."},
        "bbox": {"type": "string", "pattern": r"^\d+(\.\d+)?(,\d+(\.\d+)?){3}$",
                 "description": "x1,y1,x2,y2 in image pixels; needed by prompt=grounding."},
        "max_new_tokens": {"type": "integer", "minimum": 1,
                           "description": "Cap on generated tokens; the server's own cap still applies."},
        "pages": {"type": "string", "description": "PDF uploads: the pages to read, e.g. 1-3,7 (default all)."},
        "dpi": {"type": "number", "minimum": 36, "maximum": 600,
                "description": "PDF uploads: rendering resolution (default 200, as dots.ocr's parser)."},
    },
}
"""The multipart form of POST /ocr, for the OpenAPI document (the body itself is parsed by hand)."""


# -- OpenAI chat completions ------------------------------------------------------------------------

def _valid_unicode(value: str) -> str:
    """JSON may spell a lone surrogate (\\ud800); it is no text, and neither a tokenizer nor UTF-8 takes it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("holds a lone surrogate (\\ud800 to \\udfff); send valid UTF-8 text") from None
    return value


Text = Annotated[str, AfterValidator(_valid_unicode)]

class ImageURL(BaseModel):
    model_config = ConfigDict(extra="allow")
    url: Text
    detail: str | None = None


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text"]
    text: Text


class ImagePart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["image_url"]
    image_url: ImageURL | Text


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: Text | list[TextPart | ImagePart] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: Text | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    # strict: `true` is not 1, "0.5" is not a number (OpenAI's API refuses them too)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0, strict=True)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0, strict=True)
    max_tokens: int | None = Field(default=None, ge=1, strict=True)
    max_completion_tokens: int | None = Field(default=None, ge=1, strict=True)
    n: int | None = Field(default=None, ge=1, le=1, strict=True, description="Only one choice is generated.")
    stream: bool = Field(default=False, strict=True)
    stream_options: StreamOptions | None = None
    logprobs: bool | None = Field(default=None, strict=True,
                                  description="Each answer token's log probability, as vLLM returns it.")
    top_logprobs: int | None = Field(default=None, ge=0, le=20, strict=True,
                                     description="Accepted; the rivals are not returned (top_logprobs is []).")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class TokenLogprob(BaseModel):
    token: str
    """The text this token added to the answer ("" for one that ends mid-character; the next has it whole)."""
    logprob: float
    bytes: list[int]
    top_logprobs: list[Any] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob]


class Choice(BaseModel):
    index: int = 0
    message: ChoiceMessage
    finish_reason: Literal["stop", "length"]
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "dotocr"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
