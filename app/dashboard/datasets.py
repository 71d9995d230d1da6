"""Dataset pages: the list with the upload form, one dataset (class counts per split, imbalance,
shot groups, images and patient groups per class and split, problems), its validation progress
while it is checked, and delete.

The upload is ``POST /v1/datasets`` itself (streamed to the store in bounded memory); the page
sends it with XMLHttpRequest to show upload progress, the CSRF token in a header.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from sqlalchemy.orm import Session

from app.core.events import EventWindow
from app.dashboard.auth import CsrfCheckedDep, CsrfCheckedUploadDep, SignedIn, SignedInDep
from app.dashboard.pages import DashboardRoute, PageNumber, list_window, page, page_count
from app.datasets import router as datasets_api
from app.datasets.models import DatasetStatus
from app.deps import SessionDep, SettingsDep, StoreDep, actor_for

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)

EVENTS_SHOWN = 200
# Statuses that change on their own, so the page keeps asking.
CHANGING = (DatasetStatus.uploading, DatasetStatus.validating, DatasetStatus.deleting)


def _datasets_table(session: Session, user: SignedIn, page_number: int) -> dict[str, Any]:
    limit, offset = list_window(page_number)
    listing = datasets_api.list_datasets(
        user.principal, session, status=None, limit=limit, offset=offset
    )
    return {
        "datasets": listing.items,
        "total": listing.total,
        "page_number": page_number,
        "pages": page_count(listing.total),
        "changing": any(d.status in CHANGING for d in listing.items),
    }


@router.get("/datasets")
def datasets_page(
    request: Request, user: SignedInDep, session: SessionDep, page_number: PageNumber = 1
) -> Response:
    return page(request, "datasets.html", user, _datasets_table(session, user, page_number))


@router.get("/datasets/table")
def datasets_table(
    request: Request, user: SignedInDep, session: SessionDep, page_number: PageNumber = 1
) -> Response:
    """The list's table alone, refreshed by htmx while a dataset on it is being checked."""
    return page(request, "_datasets_table.html", user, _datasets_table(session, user, page_number))


@router.post("/datasets")
async def upload_dataset(
    request: Request,
    user: CsrfCheckedUploadDep,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
) -> Response:
    """``POST /v1/datasets`` with the session's key: 202 and the dataset (JSON) for the page's
    script, which then opens the dataset's page."""
    response = Response()
    actor = actor_for(request, user.principal)
    dataset = await datasets_api.upload_dataset(
        request, response, user.principal, actor, session, settings, store
    )
    return JSONResponse(
        dataset.model_dump(mode="json"),
        status_code=202,
        headers={"Location": f"/datasets/{dataset.id}"},
    )


@router.get("/datasets/{dataset_id}")
def dataset_page(
    request: Request, dataset_id: str, user: SignedInDep, session: SessionDep
) -> Response:
    dataset = datasets_api.read_dataset(dataset_id, user.principal, session)
    events = datasets_api.list_dataset_events(
        dataset_id, user.principal, session, EventWindow(limit=EVENTS_SHOWN)
    )
    counts: dict[str, dict[str, int]] = dataset.stats.get("class_counts") or {}
    patient_groups = dataset.stats.get("patient_groups") or {}
    return page(
        request,
        "dataset.html",
        user,
        {
            "dataset": dataset,
            "changing": dataset.status in CHANGING,
            "events": events.items,
            "events_total": events.total,
            "chart": {"classes": list(dataset.classes), "counts": counts},
            "split_table": split_table(list(dataset.classes), counts, patient_groups),
        },
    )


def split_table(
    classes: list[str], counts: dict[str, dict[str, int]], patient_groups: dict[str, Any]
) -> dict[str, Any] | None:
    """Rows of (class, [(images, groups or None) per split]) plus a totals row; None until the
    dataset has counts. Groups are shown only for a dataset split by patient group."""
    if not counts:
        return None
    splits = list(counts)
    per_class = patient_groups.get("per_class") or {}

    def cell(split: str, name: str) -> tuple[int, int | None]:
        groups = per_class.get(split, {}).get(name) if per_class else None
        return counts[split].get(name, 0), groups

    rows = [(name, [cell(split, name) for split in splits]) for name in classes]
    per_split = patient_groups.get("per_split") or {}
    totals = [
        (sum(counts[split].values()), per_split.get(split) if per_split else None)
        for split in splits
    ]
    return {"splits": splits, "rows": rows, "totals": totals, "grouped": bool(per_class)}


@router.get("/datasets/{dataset_id}/status")
def dataset_status(
    request: Request,
    dataset_id: str,
    user: SignedInDep,
    session: SessionDep,
    shown: DatasetStatus,
) -> Response:
    """The validation progress block; once the status differs from the ``shown`` one, htmx is
    told to reload the page, which then shows the outcome."""
    dataset = datasets_api.read_dataset(dataset_id, user.principal, session)
    if dataset.status != shown:
        return Response(status_code=200, headers={"HX-Refresh": "true"})
    return page(request, "_dataset_status.html", user, {"dataset": dataset, "changing": True})


@router.post("/datasets/{dataset_id}/delete")
def delete_dataset(
    dataset_id: str, request: Request, user: CsrfCheckedDep, session: SessionDep, store: StoreDep
) -> Response:
    actor = actor_for(request, user.principal)
    datasets_api.delete_dataset(dataset_id, user.principal, actor, session, store)
    return RedirectResponse("/datasets", status_code=303)
