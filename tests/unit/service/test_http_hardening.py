"""Security headers on every response, CORS only where configured, and an OpenAPI schema that
says what the server does (security scheme, `?name=` on raw uploads, the `student` enum, 405s
with `Allow`, a multipart form whose fields come after its file told so)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.teams.models import Role
from foprokd.catalog import STUDENTS
from tests.conftest import Service
from tests.unit.service.test_api_auth import auth, make_team_key
from tests.unit.teams.conftest import override_settings


@pytest.fixture
def client(embedded_service: Service) -> Iterator[TestClient]:
    from app.main import app

    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def key(client: TestClient) -> str:
    return make_team_key("icu", Role.admin)[1]


def test_every_response_says_nosniff_and_its_referrer_policy(client: TestClient, key: str) -> None:
    for response in (
        client.get("/v1/me", headers=auth(key)),
        client.get("/v1/me"),  # a 401
        client.get("/v1/nowhere", headers=auth(key)),  # a 404
        client.get("/sign-in"),  # HTML
        client.get("/static/dashboard.css"),
    ):
        assert response.headers["X-Content-Type-Options"] == "nosniff", response.url
        assert response.headers["Referrer-Policy"] == "same-origin", response.url


def test_html_gets_a_strict_csp_and_json_one_that_allows_nothing(
    client: TestClient, key: str
) -> None:
    page = client.get("/sign-in")
    csp = page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert page.headers["X-Frame-Options"] == "DENY"
    api = client.get("/v1/me", headers=auth(key))
    assert api.headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"


def test_hsts_only_over_tls_or_behind_a_tls_proxy(
    embedded_service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.main import app

    with TestClient(app, base_url="http://testserver") as plain:
        assert "Strict-Transport-Security" not in plain.get("/health").headers
    with TestClient(app, base_url="https://testserver") as tls:
        assert tls.get("/health").headers["Strict-Transport-Security"].startswith("max-age=")
    override_settings(monkeypatch, hsts_behind_proxy="true")
    with TestClient(app, base_url="http://testserver") as proxied:
        assert "Strict-Transport-Security" in proxied.get("/health").headers


def test_cors_is_off_unless_origins_are_configured(
    client: TestClient, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    preflight = {
        "Origin": "https://evil.example",
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    refused = client.options("/v1/me", headers=preflight)
    assert "access-control-allow-origin" not in refused.headers
    answered = client.get("/v1/me", headers={**auth(key), "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in answered.headers

    from app.main import create_app

    override_settings(monkeypatch, cors_origins='["https://viewer.hospital.example"]')
    with TestClient(create_app()) as configured:
        allowed = configured.options(
            "/v1/me", headers={**preflight, "Origin": "https://viewer.hospital.example"}
        )
        assert allowed.headers["access-control-allow-origin"] == "https://viewer.hospital.example"
        other = configured.options("/v1/me", headers=preflight)
        assert "access-control-allow-origin" not in other.headers


def schema(client: TestClient) -> dict[str, Any]:
    result: dict[str, Any] = client.get("/openapi.json").json()
    return result


def test_the_schema_declares_the_api_key_on_every_v1_operation(client: TestClient) -> None:
    spec = schema(client)
    (scheme,) = spec["components"]["securitySchemes"].values()
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for path, operations in spec["paths"].items():
        if path.startswith("/v1/"):
            for method, operation in operations.items():
                assert operation.get("security"), (method, path)
                assert "401" in operation["responses"], (method, path)
                assert operation["responses"]["401"]["content"]["application/json"]["schema"]


def test_the_schema_declares_the_raw_uploads_query_and_the_student_enum(
    client: TestClient,
) -> None:
    spec = schema(client)
    upload = spec["paths"]["/v1/datasets"]["post"]
    query = {p["name"]: p for p in upload["parameters"] if p["in"] == "query"}
    assert {"name", "layout", "filename"} <= set(query)
    assert "application/octet-stream" in upload["requestBody"]["content"]
    student = spec["components"]["schemas"]["JobCreate"]["properties"]["student"]
    assert student["enum"] == sorted(STUDENTS)
    predict = spec["paths"]["/v1/jobs/{job_id}/predict"]["post"]
    form = predict["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["files"]["type"] == "array"
    assert {"409", "413", "429"} <= set(predict["responses"])


def test_a_405_names_the_allowed_methods(client: TestClient, key: str) -> None:
    response = client.put("/v1/jobs", headers=auth(key))
    assert response.status_code == 405
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_a_form_with_its_file_before_the_name_is_told_to_reorder(
    client: TestClient, key: str
) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a/1.png", b"x")
    boundary = "b0undary"
    body = (
        (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="d.zip"\r\n'
            "Content-Type: application/zip\r\n\r\n"
        ).encode()
        + archive.getvalue()
        + (
            f"\r\n--{boundary}\r\n"
            'Content-Disposition: form-data; name="name"\r\n\r\n'
            f"late-name\r\n--{boundary}--\r\n"
        ).encode()
    )
    response = client.post(
        "/v1/datasets",
        headers={**auth(key), "Content-Type": f"multipart/form-data; boundary={boundary}"},
        content=body,
    )
    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert "before its file part" in message
    assert "Field required" not in message
    assert client.get("/v1/datasets", headers=auth(key)).json()["total"] == 0
