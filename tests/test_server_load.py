"""dotocr-serve under sustained use and under generated input: 500 requests in a row with memory that stays
flat, and schemathesis driving every route from the OpenAPI document without one 5xx."""

from __future__ import annotations

import gc

import httpx
import psutil
import pytest
import schemathesis
from conftest import golden_dir
from hypothesis import HealthCheck, settings
from server_helpers import chat_messages, png_bytes, running_server, tiny_settings

from dotocr.engine import DotOCRInference
from dotocr.server import ServerLimits, create_app

LIMITS = ServerLimits(max_upload_bytes=2 * 1024 * 1024, request_timeout_s=60)


@pytest.fixture(scope="module")
def url():
    engine = DotOCRInference(tiny_settings(golden_dir(), max_new_tokens=1))
    with running_server(engine, limits=LIMITS) as base:
        yield base


@pytest.mark.timeout(420)
def test_500_sequential_requests_with_bounded_memory(url: str) -> None:
    """Half uploads, half chat completions; the server runs in this process, so its memory is ours."""
    image = png_bytes((56, 56), "x")
    chat = {"model": "m", "messages": chat_messages(image), "max_tokens": 1}
    process = psutil.Process()
    rss: dict[int, int] = {}
    with httpx.Client(base_url=url, timeout=60) as client:
        for i in range(500):
            if i % 2:
                response = client.post("/v1/chat/completions", json=chat)
            else:
                response = client.post("/ocr", files={"file": ("a.png", image, "image/png")})
            assert response.status_code == 200, (i, response.text)
            if i in (99, 499):
                gc.collect()
                rss[i] = process.memory_info().rss
    growth_mb = (rss[499] - rss[99]) / 2**20
    assert growth_mb < 40, f"memory grew {growth_mb:.1f} MiB over 400 requests"


# -- schemathesis --------------------------------------------------------------------------------------

def _schema() -> dict:
    """The OpenAPI document of the real app (building it loads nothing)."""
    return create_app(DotOCRInference(tiny_settings(golden_dir())), limits=LIMITS).openapi()


schema = schemathesis.openapi.from_dict(_schema())


@pytest.mark.timeout(120)
@schema.parametrize()
@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])  # conftest's user-dir isolation
def test_generated_requests_never_get_a_server_error(case, url: str) -> None:
    response = case.call(base_url=url, timeout=60)
    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
    content_type = (response.headers.get("content-type") or [""])[0]
    assert content_type.startswith(("application/json", "text/event-stream", "text/html")), content_type


def test_openapi_documents_every_route() -> None:
    paths = _schema()["paths"]
    assert {"/ocr", "/health", "/v1/models", "/v1/chat/completions"} <= set(paths)
    form = paths["/ocr"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["file"] and {"file", "prompt", "format", "bbox", "max_new_tokens"} <= set(
        form["properties"])

