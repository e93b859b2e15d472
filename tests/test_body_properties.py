"""Property: no JSON value in any body field, and no text in any form field, makes a 5xx (issue 13)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fluxserve.api.protocol.images import FormImageBody, JsonImageBody

JSON_FIELDS = sorted(JsonImageBody.model_fields)
FORM_FIELDS = sorted({*FormImageBody.model_fields, "image[]", "input_image_1", "input"})

# Any text, lone surrogates included (the JSON encoder escapes them as \ud800).
LONE_SURROGATES = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])
TEXT = st.lists(st.characters() | LONE_SURROGATES, max_size=20).map("".join)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
JSON_VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12
)
# Text that looks like what a form field might carry: numbers in odd forms, JSON, base64, noise.
FORM_TEXT = st.one_of(
    st.text(max_size=20),  # a form carries bytes: no lone surrogates
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats().map(str),
    st.sampled_from(["²", "٢٥٦", "1_0", " 5", "+5", "1e3", "nan", "-inf", "{}", '{"scene": 1}', "aGk=", "auto"]),
)
PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, cache_dir: Any, engines: Any) -> Iterator[TestClient]:
    from fluxserve.api.app import create_app
    from fluxserve.settings import Settings

    settings_ = Settings(
        data_dir=tmp_path_factory.mktemp("properties"),
        cache_dir=cache_dir,
        models=["tiny-random", "tiny-random-base"],
        warmup=False,
        allow_download=False,
    )
    app: FastAPI = create_app(settings_, {name: engines[name] for name in settings_.models})
    with TestClient(app) as test_client:
        yield test_client


def assert_not_5xx(client: TestClient, response: Any) -> None:
    """Nor afterwards: an accepted job is canceled (so the queue stays short), and the history reads."""
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    elif "x-job-id" in response.headers:
        assert client.post(f"/v1/jobs/{response.headers['x-job-id']}/cancel").status_code < 500
    history = client.get("/v1/jobs", params={"limit": 3})
    assert history.status_code == 200, history.text


@PROPERTY
@given(
    prompt=st.just("a lighthouse") | TEXT.filter(str.strip),
    field=st.sampled_from(JSON_FIELDS),
    value=st.none() | JSON_VALUES,  # None leaves the request valid: the prompt alone decides
    path=st.sampled_from(["/v1/jobs", "/v1/jobs", "/v1/images/edits"]),
)
def test_any_json_value_in_any_field_is_never_a_5xx(
    client: TestClient, prompt: str, field: str, value: Any, path: str
) -> None:
    body = {"prompt": prompt, "size": "64x64", field: value}
    content = json.dumps(body).encode()  # ASCII: lone surrogates travel as \ud800 escapes
    assert_not_5xx(client, client.post(path, content=content, headers={"content-type": "application/json"}))


@PROPERTY
@given(fields=st.dictionaries(st.sampled_from(FORM_FIELDS), FORM_TEXT, min_size=1, max_size=4))
def test_any_text_in_any_form_field_is_never_a_5xx(client: TestClient, fields: dict[str, str]) -> None:
    assert_not_5xx(client, client.post("/v1/jobs", data={"prompt": "a lighthouse", "size": "64x64", **fields}))
