"""The teachers page: the built-in zoo with where each model's weights were found (or where to
put them), the students a job may train, and the team's own uploaded teachers."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.dashboard.auth import SignedInDep
from app.dashboard.pages import DashboardRoute, page
from app.deps import SessionDep, SettingsDep
from app.teachers import router as teachers_api
from foprokd.catalog import STUDENTS, expected_weight_paths, find_weights

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)


@router.get("/teachers")
def teachers_page(
    request: Request, user: SignedInDep, session: SessionDep, settings: SettingsDep
) -> Response:
    assert settings.weights_dir is not None  # Settings fills it from the data dir
    students = [
        (
            spec,
            find_weights(name, settings.weights_dir),
            expected_weight_paths(name, settings.weights_dir),
        )
        for name, spec in STUDENTS.items()
    ]
    return page(
        request,
        "teachers.html",
        user,
        {
            "catalog": teachers_api.list_teachers(user.principal, session, settings),
            "students": students,
        },
    )
