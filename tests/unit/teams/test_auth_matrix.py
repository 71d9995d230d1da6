"""The auth matrix over every `/v1` route the app serves (walked from ``app.routes``, so a new
route is in it the day it is added): no key, a malformed, revoked or expired key answer 401;
another team's key answers 404 for this team's ids; a viewer key on a write answers 403; and
nothing team B reads (listings, objects, event streams, download links) holds an id of team A."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.core.db import utcnow
from app.core.storage import ObjectStore
from app.jobs.models import Job, JobStatus
from app.jobs.state import EventKind, add_event
from app.students.models import Artifact
from app.students.service import artifact_key
from app.teachers.models import Teacher
from app.teams.models import ApiKey, Role
from tests.unit.jobs.ready_dataset import put_ready_dataset
from tests.unit.teams.conftest import TeamKeys, add_key, auth, make_team

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
# POSTs that only read (a prediction changes nothing), so a viewer key may make them.
READS_BY_POST = {"/v1/jobs/{job_id}/predict"}
PNG_1X1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


@dataclass(frozen=True)
class Operation:
    method: str
    template: str  # e.g. /v1/jobs/{job_id}

    @property
    def params(self) -> list[str]:
        return re.findall(r"\{([^}:]+)", self.template)

    def __str__(self) -> str:
        return f"{self.method} {self.template}"


def v1_operations(app: FastAPI) -> list[Operation]:
    """Every (method, path) the app routes under /v1, included routers and hidden routes too."""
    found = {
        Operation(method, route.path)
        for route in iter_route_contexts(app.routes)
        if route.path and route.path.startswith("/v1/")
        for method in route.methods or ()
        if method != "HEAD"
    }
    return sorted(found, key=lambda op: (op.template, op.method))


@dataclass
class Tenant:
    """A team with every kind of object, and the ids that name them."""

    keys: TeamKeys
    ids: dict[str, str]  # path parameter -> one of this team's objects
    all_ids: set[str]


def populate(session: Session, store: ObjectStore, keys: TeamKeys) -> Tenant:
    """A ready dataset, a succeeded job with an artifact and events, a teacher, keys."""
    dataset = put_ready_dataset(session, store, keys.id, num_classes=2, per_class=5, size=16)
    job = Job(
        team_id=keys.id,
        dataset_id=dataset.id,
        teacher="resnet18",
        student="resnet18",
        method="ekd",
        status=JobStatus.succeeded.value,
    )
    session.add(job)
    session.flush()
    add_event(session, job.id, EventKind.info, "Trained.")
    key = artifact_key(keys.id, job.id, "model_card.md")
    info = store.put_bytes(key, b"# card\n", content_type="text/markdown")
    artifact = Artifact(
        team_id=keys.id,
        job_id=job.id,
        name="model_card.md",
        media_type="text/markdown",
        bytes=info.size,
        sha256=info.sha256 or "",
        object_key=key,
    )
    teacher_key = f"teams/{keys.id}/teachers/t/weights.safetensors"
    store.put_bytes(teacher_key, b"\0" * 16)
    teacher = Teacher(
        team_id=keys.id,
        name="own-teacher",
        arch="resnet18",
        feature_dim=512,
        input_size=224,
        weights_key=teacher_key,
        weights_sha256="0" * 64,
        weights_bytes=16,
    )
    session.add_all([artifact, teacher])
    session.commit()
    key_ids = {k.id for k in session.query(ApiKey).filter(ApiKey.team_id == keys.id)}
    member_key = next(
        k.id for k in session.query(ApiKey).filter_by(team_id=keys.id, role=Role.member.value)
    )
    ids = {
        "dataset_id": dataset.id,
        "job_id": job.id,
        "key_id": member_key,
        "teacher_id": teacher.id,
        "name": artifact.name,
    }
    everything = {keys.id, dataset.id, job.id, artifact.id, teacher.id, *key_ids}
    return Tenant(keys, ids, everything)


def request_kwargs(op: Operation, tenant: Tenant) -> dict[str, Any]:
    """A well-formed request for ``op`` (so only auth and tenancy can refuse it)."""
    bodies: dict[str, Callable[[], dict[str, Any]]] = {
        "POST /v1/keys": lambda: {"json": {}},
        "POST /v1/keys/{key_id}/rotate": lambda: {"json": {}},
        "POST /v1/datasets": lambda: {
            "data": {"name": "matrix-upload"},
            "files": {"file": ("d.zip", b"PK\x03\x04" + b"\0" * 64, "application/zip")},
        },
        "POST /v1/datasets/uploads": lambda: {"json": {"name": "direct", "size": 10_000_000}},
        "POST /v1/datasets/uploads/{dataset_id}/complete": lambda: {
            "json": {"parts": [{"part_number": 1, "etag": "abc"}]}
        },
        "POST /v1/teachers": lambda: {
            "data": {"name": "matrix-teacher", "arch": "resnet18"},
            "files": {"file": ("w.safetensors", b"\0" * 64, "application/octet-stream")},
        },
        "POST /v1/jobs": lambda: {
            "json": {
                "dataset_id": tenant.ids["dataset_id"],
                "teacher": "resnet18",
                "student": "resnet18",
                "params": {"allow_random_weights": True, "epochs": 1, "image_size": 32},
            }
        },
        "POST /v1/jobs/{job_id}/predict": lambda: {
            "files": [("files", ("x.png", PNG_1X1, "image/png"))]
        },
    }
    make = bodies.get(str(op))
    return make() if make is not None else {}


def path_of(op: Operation, tenant: Tenant) -> str:
    path = op.template
    for param in op.params:
        path = path.replace(f"{{{param}}}", tenant.ids[param])
    return path


def names_an_id(op: Operation) -> bool:
    """Whether the request names an object of the team: in its path or (a job) its body."""
    return bool(op.params) or str(op) == "POST /v1/jobs"


@pytest.fixture
def world(client: TestClient, session: Session, store: ObjectStore) -> dict[str, Any]:
    a = populate(session, store, make_team(session, "team-a"))
    b = populate(session, store, make_team(session, "team-b"))
    _, revoked = add_key(session, a.keys.id, Role.admin, revoked_at=utcnow())
    _, expired = add_key(session, a.keys.id, Role.admin, expires_at=utcnow() - timedelta(seconds=1))
    return {"a": a, "b": b, "revoked": revoked, "expired": expired}


def test_the_walk_finds_every_route_the_schema_documents(client: TestClient) -> None:
    from app.main import app

    walked = {(op.method, op.template) for op in v1_operations(app)}
    documented = {
        (method.upper(), template)
        for template, operations in client.get("/openapi.json").json()["paths"].items()
        if template.startswith("/v1/")
        for method in operations
    }
    assert documented <= walked
    assert len(walked) >= 29


def test_every_v1_route_refuses_keys_that_do_not_work_with_401(
    client: TestClient, world: dict[str, Any]
) -> None:
    from app.main import app

    a: Tenant = world["a"]
    presented = {
        "no key": {},
        "malformed key": {"Authorization": "Bearer not-a-key"},
        "revoked key": auth(world["revoked"]),
        "expired key": auth(world["expired"]),
    }
    for op in v1_operations(app):
        for case, headers in presented.items():
            response = client.request(
                op.method, path_of(op, a), headers=headers, **request_kwargs(op, a)
            )
            assert response.status_code == 401, (case, str(op), response.text)
            assert response.json()["error"]["code"] == "unauthenticated"
            if case == "expired key":
                assert "expired" in response.json()["error"]["message"]


def test_another_teams_key_gets_404_for_this_teams_ids_and_never_sees_them(
    client: TestClient, world: dict[str, Any]
) -> None:
    from app.main import app

    a: Tenant = world["a"]
    b: Tenant = world["b"]
    for op in v1_operations(app):
        # B's admin key, so no role check stands in for the tenancy check.
        path, kwargs = path_of(op, a), request_kwargs(op, a)
        response = client.request(op.method, path, headers=auth(b.keys.admin), **kwargs)
        if names_an_id(op):
            assert response.status_code == 404, (str(op), response.text)
            assert response.json()["error"]["code"] == "not_found"
        else:
            assert response.status_code < 500 or response.status_code == 501, (str(op), response)
        # A 404 may quote the id the caller sent; any other id of A would be a leak.
        sent = {i for i in a.all_ids if i in path or i in repr(kwargs)}
        leaked = {i for i in a.all_ids - sent if i in response.text}
        assert not leaked, (str(op), leaked)


def test_nothing_team_b_reads_of_its_own_holds_an_id_of_team_a(
    client: TestClient, world: dict[str, Any]
) -> None:
    from app.main import app

    a: Tenant = world["a"]
    b: Tenant = world["b"]
    read = 0
    for op in v1_operations(app):
        if op.method != "GET":
            continue
        path = path_of(op, b)
        with client.stream("GET", path, headers=auth(b.keys.admin)) as response:
            text = "".join(response.iter_text())
        assert response.status_code == 200, (str(op), text)
        assert not {i for i in a.all_ids if i in text}, str(op)
        read += 1
    link = client.get(
        f"/v1/jobs/{b.ids['job_id']}/artifacts/{b.ids['name']}?redirect=true",
        headers=auth(b.keys.admin),
        follow_redirects=False,
    )
    assert link.status_code == 307
    assert not {i for i in a.all_ids if i in link.headers["location"]}
    assert client.get(link.headers["location"]).text == "# card\n"
    assert read >= 15


def test_a_viewer_key_on_a_write_gets_403(client: TestClient, world: dict[str, Any]) -> None:
    from app.main import app

    a: Tenant = world["a"]
    writes = [op for op in v1_operations(app) if op.method in WRITE_METHODS]
    assert writes
    for op in writes:
        response = client.request(
            op.method, path_of(op, a), headers=auth(a.keys.viewer), **request_kwargs(op, a)
        )
        if op.template in READS_BY_POST:
            assert response.status_code != 403, (str(op), response.text)
        else:
            assert response.status_code == 403, (str(op), response.text)
            assert response.json()["error"]["code"] == "forbidden"


def test_team_bs_audit_trail_never_holds_an_id_of_team_a(
    client: TestClient, world: dict[str, Any]
) -> None:
    a: Tenant = world["a"]
    b: Tenant = world["b"]
    # Team A acts on its objects: a key created and revoked, an artifact downloaded, its
    # dataset's manifest read, its job deleted; team B only reads its own.
    made = client.post("/v1/keys", headers=auth(a.keys.admin), json={}).json()
    client.delete(f"/v1/keys/{made['id']}", headers=auth(a.keys.admin))
    client.get(f"/v1/jobs/{a.ids['job_id']}/artifacts/{a.ids['name']}", headers=auth(a.keys.viewer))
    client.get(f"/v1/datasets/{a.ids['dataset_id']}/manifest", headers=auth(a.keys.viewer))
    client.delete(f"/v1/jobs/{a.ids['job_id']}", headers=auth(a.keys.member))
    client.get(f"/v1/jobs/{b.ids['job_id']}/artifacts/{b.ids['name']}", headers=auth(b.keys.admin))
    a_ids = a.all_ids | {made["id"]}

    a_trail = client.get("/v1/audit?limit=200", headers=auth(a.keys.admin))
    assert a_trail.json()["total"] == 5
    assert {made["id"], a.ids["job_id"], a.ids["dataset_id"]} <= {
        i for i in a_ids if i in a_trail.text
    }
    b_trail = client.get("/v1/audit?limit=200", headers=auth(b.keys.admin))
    assert b_trail.json()["total"] == 1
    assert not {i for i in a_ids if i in b_trail.text}
    for filters in (f"object_id={a.ids['job_id']}", f"actor={made['prefix']}"):
        searched = client.get(f"/v1/audit?{filters}", headers=auth(b.keys.admin))
        assert searched.json()["total"] == 0, filters
