"""Property-based fuzzing of every operation in the live OpenAPI schema (schemathesis), once with
an admin key and once with a viewer key: no answer is a 5xx, and every answer's status code,
content type and body are the ones the schema declares for that operation.

The service is the embedded deployment in a temporary data dir, holding one team with a ready
dataset, a finished job with an artifact, a teacher and keys; path parameters name those real
objects (a random id only ever meets the 404 path), so handlers run on data. Bounded: a fixed
number of examples per operation, no Hypothesis database, about a minute on two cores.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis import checks
from starlette.types import ASGIApp

from app.core.config import get_settings
from app.core.db import get_sessionmaker
from app.core.migrate import upgrade
from app.core.storage import open_object_store
from app.teachers.router import get_weights_verifier
from app.teachers.schemas import WeightsCheck
from tests.support.service import configure_service, reset_service_caches
from tests.unit.teams.conftest import make_team
from tests.unit.teams.test_auth_matrix import Tenant, populate

EXAMPLES_PER_OPERATION = 5


def no_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """No 5xx, except a 501 the operation declares (direct-to-S3 uploads on a service that
    stores objects locally: an honest, documented answer, not a failure)."""
    if response.status_code == 501 and "501" in case.operation.responses.status_codes:
        return None
    result: bool | None = checks.not_a_server_error(ctx, response, case)
    return result


CHECKS = [
    no_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


@dataclass(frozen=True)
class FuzzWorld:
    app: ASGIApp
    tenant: Tenant


def refuse_weights(object_key: str, arch: str) -> WeightsCheck:
    """The worker's verdict, without a worker: what a fuzzer uploads is never a real state dict."""
    return WeightsCheck(ok=False, reason="not a state dict (fuzz)")


@pytest.fixture(scope="module")
def fuzz_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzWorld]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz") / "fopro"
    with pytest.MonkeyPatch.context() as monkeypatch:
        # One key sends every request here: the per-key rate limit would answer 429 instead.
        configure_service(monkeypatch, data_dir, rate_limit="1000000/minute")
        upgrade(get_settings().database_url)
        with get_sessionmaker()() as session:
            store = open_object_store(get_settings())
            tenant = populate(session, store, make_team(session, "fuzzers"))
        from app.main import app

        app.dependency_overrides[get_weights_verifier] = lambda: refuse_weights
        try:
            yield FuzzWorld(app, tenant)
        finally:
            app.dependency_overrides.clear()
            reset_service_caches()


def _live_schema() -> Any:
    """The schema the app serves at /openapi.json, requested from the app itself (its routes
    do not depend on settings; the fixture below configures the service before any call)."""
    from app.main import app

    return schemathesis.openapi.from_asgi("/openapi.json", app)


schema = _live_schema()


def real_path_parameters(case: Any, tenant: Tenant) -> None:
    """Point every path parameter at the team's object of that kind."""
    for name in list(case.path_parameters or {}):
        if name in tenant.ids:
            case.path_parameters[name] = tenant.ids[name]


BOUNDED = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    database=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def call_as(case: Any, world: FuzzWorld, role: str) -> None:
    real_path_parameters(case, world.tenant)
    key = getattr(world.tenant.keys, role)
    case.call_and_validate(headers={"Authorization": f"Bearer {key}"}, checks=CHECKS)


@schema.parametrize()
@BOUNDED
def test_every_operation_with_an_admin_key(case: Any, fuzz_world: FuzzWorld) -> None:
    call_as(case, fuzz_world, "admin")


@schema.parametrize()
@BOUNDED
def test_every_operation_with_a_viewer_key(case: Any, fuzz_world: FuzzWorld) -> None:
    call_as(case, fuzz_world, "viewer")
