"""The dashboard, served by the API process at ``/``: its pages and its static files."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from app.dashboard import datasets, jobs, sign_in, teachers
from app.dashboard.pages import STATIC_DIR, STATIC_URL


def install_dashboard(app: FastAPI) -> None:
    """Add the dashboard's routes and ``/static`` (templates' CSS, scripts, vendored libraries)."""
    for pages in (sign_in, jobs, datasets, teachers):
        app.include_router(pages.router)
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="dashboard-static")
