"""The CLI's contract with scripts: exit codes per outcome, JSON on stdout, errors as the API's
envelope, and ``login`` saving a checked key (server answers scripted with MockTransport)."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from fopro_client import FoproClient, cli
from fopro_client.cli import ExitCode, app
from fopro_client.config import config_path
from tests.unit.client.conftest import (
    BASE_URL,
    Server,
    dataset_json,
    envelope,
    event_json,
    job_json,
    sse_message,
)

Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., tuple[Any, Server]]:
    """``run(handler, *args, env=...)``: invoke the CLI against ``handler``; (result, server)."""

    def invoke(handler: Handler, *args: str, env: dict[str, str] | None = None, **kw: Any):
        server = Server(handler)

        def client(url: str, key: str | None) -> FoproClient:
            made = server.client()
            made._http.base_url = httpx.URL(url + "/")
            if key is None:
                made._http.headers.pop("Authorization")
            else:
                made._http.headers["Authorization"] = f"Bearer {key}"
            return made

        monkeypatch.setattr(cli, "FoproClient", client)
        environ = {
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "FOPRO_URL": BASE_URL,
            "FOPRO_API_KEY": "fpk_env",
            **(env or {}),
        }
        result = CliRunner().invoke(app, list(args), env=environ, **kw)
        return result, server

    return invoke


@pytest.mark.parametrize(
    ("status", "code", "exit_code"),
    [
        (401, "unauthenticated", ExitCode.AUTH),
        (403, "forbidden", ExitCode.AUTH),
        (404, "not_found", ExitCode.NOT_FOUND),
        (409, "dataset_in_use", ExitCode.CONFLICT),
        (422, "invalid_input", ExitCode.INVALID),
        (500, "internal", ExitCode.UNAVAILABLE),
    ],
)
def test_api_errors_map_to_documented_exit_codes(
    run: Callable[..., Any], status: int, code: str, exit_code: ExitCode
) -> None:
    result, _ = run(
        lambda r: envelope(status, code, "What to do next."), "datasets", "delete", "ds_1", "--json"
    )
    assert result.exit_code == exit_code
    assert result.stdout == ""
    assert json.loads(result.stderr)["error"]["code"] == code


def test_an_unreachable_server_is_exit_6(run: Callable[..., Any]) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    result, server = run(refuse, "jobs", "list")
    assert result.exit_code == ExitCode.UNAVAILABLE
    assert "FOPRO_URL" in result.stderr
    assert len(server.requests) == 4  # the client's retries ran first


def test_a_missing_key_says_how_to_log_in(run: Callable[..., Any]) -> None:
    result, server = run(
        lambda r: envelope(401, "unauthenticated", "Missing API key."),
        "jobs",
        "list",
        env={"FOPRO_API_KEY": ""},
    )
    assert result.exit_code == ExitCode.AUTH
    assert "fopro login" in result.stderr
    assert "Authorization" not in server.requests[0].headers


def test_json_output_is_the_api_s_objects(run: Callable[..., Any]) -> None:
    page = {"items": [dataset_json(status="ready")], "total": 1, "limit": 50, "offset": 0}
    result, server = run(
        lambda r: httpx.Response(200, json=page), "datasets", "list", "--json", "--status", "ready"
    )
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert listed["total"] == 1
    assert listed["items"][0]["id"] == "ds_1"
    assert server.requests[0].url.params["status"] == "ready"
    assert server.requests[0].headers["Authorization"] == "Bearer fpk_env"


def test_an_invalid_upload_is_exit_1_with_its_problems(
    run: Callable[..., Any], tmp_path: Path
) -> None:
    archive = tmp_path / "derm.zip"
    archive.write_bytes(b"PK")
    problems = [{"entry": "x/../../y.png", "code": "path_traversal", "message": "Remove it."}]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(202, json=dataset_json())
        return httpx.Response(200, json=dataset_json(status="invalid", problems=problems))

    result, _ = run(handler, "datasets", "upload", str(archive))
    assert result.exit_code == ExitCode.FAILED
    assert "path_traversal" in result.stderr


def test_a_missing_file_is_a_usage_error(run: Callable[..., Any], tmp_path: Path) -> None:
    result, server = run(
        lambda r: httpx.Response(500), "datasets", "upload", str(tmp_path / "nope.zip")
    )
    assert result.exit_code == ExitCode.USAGE
    assert server.requests == []


def test_params_are_json_values_and_a_bad_one_is_a_usage_error(run: Callable[..., Any]) -> None:
    ok = lambda r: httpx.Response(201, json=job_json())  # noqa: E731
    base = ["jobs", "submit", "--dataset", "ds_1", "--teacher", "resnet50", "--student", "resnet18"]
    result, server = run(
        ok,
        *base,
        "--param",
        "epochs=3",
        "--param",
        "lr=3e-4",
        "--param",
        "augment=strong",
        "--param",
        "allow_random_weights=true",
    )
    assert result.exit_code == 0, result.output
    body = json.loads(server.requests[0].content)
    assert body["params"] == {
        "epochs": 3,
        "lr": 3e-4,
        "augment": "strong",
        "allow_random_weights": True,
    }
    result, server = run(ok, *base, "--param", "epochs")
    assert result.exit_code == ExitCode.USAGE
    assert server.requests == []


@pytest.mark.parametrize(
    ("final", "exit_code"), [("succeeded", 0), ("failed", 1), ("cancelled", 1)]
)
def test_watch_exits_by_how_the_job_ended(
    run: Callable[..., Any], final: str, exit_code: int
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/stream"):
            body = sse_message("job_event", event_json(3, "Running."), 3) + sse_message(
                "end", {"status": final}
            )
            return httpx.Response(200, content=body, headers={"Content-Type": "text/event-stream"})
        return httpx.Response(200, json=job_json(status=final))

    result, _ = run(handler, "jobs", "watch", "job_1", "--json")
    assert result.exit_code == exit_code
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["type"] for line in lines] == ["event", "end"]
    assert lines[0]["id"] == 3
    assert lines[1]["status"] == final


def test_login_checks_the_key_and_saves_it_owner_only(
    run: Callable[..., Any], tmp_path: Path
) -> None:
    me = {"team_id": "team_1", "team_name": "radiology", "role": "member", "key_prefix": "fpk_ab"}
    result, server = run(
        lambda r: httpx.Response(200, json=me),
        "login",
        "--url",
        "http://hospital.test:8000/",
        input="fpk_typed\n",
        env={"FOPRO_URL": "", "FOPRO_API_KEY": ""},
    )
    assert result.exit_code == 0, result.output
    assert server.requests[0].headers["Authorization"] == "Bearer fpk_typed"
    assert "fpk_typed" not in result.stdout  # the prompt hides it
    path = config_path({"XDG_CONFIG_HOME": str(tmp_path / "config")})
    assert json.loads(path.read_text()) == {
        "url": "http://hospital.test:8000",
        "api_key": "fpk_typed",
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_login_with_a_wrong_key_saves_nothing(run: Callable[..., Any], tmp_path: Path) -> None:
    result, _ = run(
        lambda r: envelope(401, "unauthenticated", "Unknown or revoked API key."),
        "login",
        "--api-key",
        "fpk_wrong",
    )
    assert result.exit_code == ExitCode.AUTH
    assert not config_path({"XDG_CONFIG_HOME": str(tmp_path / "config")}).exists()


def test_names_and_messages_print_as_they_are(run: Callable[..., Any]) -> None:
    """Square brackets in a name are text, not terminal markup."""
    named = dataset_json(name="scan [bold]2024[/bold]", status="ready")
    result, _ = run(lambda r: httpx.Response(200, json=named), "datasets", "show", "ds_1")
    assert result.exit_code == 0
    assert "scan [bold]2024[/bold]  [ready]" in result.stdout


def test_submit_watch_exits_by_how_the_job_ended(run: Callable[..., Any]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(201, json=job_json())
        if request.url.path.endswith("/stream"):
            body = sse_message("end", {"status": "failed"})
            return httpx.Response(200, content=body, headers={"Content-Type": "text/event-stream"})
        return httpx.Response(
            200, json=job_json(status="failed", failure_code="nan_loss", failure_reason="NaN loss.")
        )

    args = ["jobs", "submit", "--dataset", "ds_1", "--teacher", "t", "--student", "s", "--watch"]
    result, _ = run(handler, *args)
    assert result.exit_code == ExitCode.FAILED
    assert "nan_loss: NaN loss." in result.stderr
    result, _ = run(handler, *args, "--json")
    assert result.exit_code == ExitCode.FAILED
    assert json.loads(result.stdout)["status"] == "failed"


def test_progress_bars_draw_for_uploads_and_downloads(
    run: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The bars a terminal gets (forced on here: the test runner is no terminal)."""
    monkeypatch.setattr(cli, "_bars_wanted", lambda as_json: True)
    archive = tmp_path / "derm.zip"
    archive.write_bytes(b"PK" * 50_000)
    payload = b"onnx" * 10_000
    row = {
        "name": "student.onnx",
        "media_type": "application/octet-stream",
        "bytes": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "created_at": "2026-12-01T10:00:00Z",
        "url": "/v1/jobs/job_1/artifacts/student.onnx",
    }

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(202, json=dataset_json())
        if request.url.path == "/v1/jobs/job_1/artifacts":
            return httpx.Response(200, json=[row])
        if request.url.path.endswith("student.onnx"):
            return httpx.Response(200, content=payload)
        return httpx.Response(200, json=dataset_json(status="ready"))

    uploaded, _ = run(handler, "datasets", "upload", str(archive))
    assert uploaded.exit_code == 0, uploaded.output
    assert "derm.zip" in uploaded.stderr
    downloaded, _ = run(handler, "jobs", "download", "job_1", "--dir", str(tmp_path / "out"))
    assert downloaded.exit_code == 0, downloaded.output
    assert "student.onnx" in downloaded.stderr
    assert (tmp_path / "out" / "student.onnx").read_bytes() == payload


def test_predict_writes_heat_maps_and_prints_findings(
    run: Callable[..., Any], tmp_path: Path
) -> None:
    (tmp_path / "lesion.png").write_bytes(b"png")
    png = base64.b64encode(b"\x89PNG heat").decode()
    answer = {
        "job_id": "job_1",
        "model_sha256": "0" * 64,
        "image_size": 32,
        "threshold_profile": "sens90",
        "predictions": [
            {
                "filename": "lesion.png",
                "top_k": [{"label": "melanoma", "index": 1, "probability": 0.61}],
                "findings": [
                    {"label": "melanoma", "index": 1, "probability": 0.61, "threshold": 0.3}
                ],
                "explanation": {
                    "method": "occlusion",
                    "label": "melanoma",
                    "index": 1,
                    "patch": 4,
                    "passes": 65,
                    "max_drop": 0.3,
                    "png_base64": png,
                },
            }
        ],
    }
    out = tmp_path / "maps"
    result, server = run(
        lambda r: httpx.Response(200, json=answer),
        "predict",
        "job_1",
        str(tmp_path / "lesion.png"),
        "--threshold-profile",
        "sens90",
        "--heat-maps",
        str(out),
    )
    assert result.exit_code == 0, result.output
    assert "findings (sens90): melanoma" in result.stdout
    assert (out / "000-lesion.occlusion.png").read_bytes() == b"\x89PNG heat"
    params = server.requests[0].url.params
    assert (params["threshold_profile"], params["explain"]) == ("sens90", "occlusion")
