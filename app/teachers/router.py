"""``/v1/teachers``: the zoo and the team's own teachers; uploads are verified before they count."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Response, UploadFile, status

from app.audit.service import AuditAction, record
from app.core.routing import ServiceRoute
from app.core.tenancy import get_owned
from app.deps import ActorDep, CurrentPrincipal, SessionDep, SettingsDep, StoreDep
from app.teachers.models import Teacher
from app.teachers.schemas import TeacherCatalogOut, TeacherOut
from app.teachers.service import (
    WeightsVerifier,
    delete_teacher,
    register_teacher,
    team_teachers,
    verify_on_worker,
    zoo_teachers,
)
from app.teams.models import Role

router = APIRouter(prefix="/teachers", tags=["teachers"], route_class=ServiceRoute)


def get_weights_verifier() -> WeightsVerifier:
    """The strict torch check of stored weights: a cpu-queue task (tests swap it in-process)."""
    return verify_on_worker


WeightsVerifierDep = Annotated[WeightsVerifier, Depends(get_weights_verifier)]


@router.get("")
def list_teachers(
    principal: CurrentPrincipal, session: SessionDep, settings: SettingsDep
) -> TeacherCatalogOut:
    """The zoo (weights paths: absolute for admin keys, relative to the weights directory for
    others) and the team's own teachers."""
    return TeacherCatalogOut(
        zoo=zoo_teachers(settings, absolute_paths=principal.role is Role.admin),
        team=[TeacherOut.model_validate(t) for t in team_teachers(session, principal.team_id)],
    )


@router.post("", status_code=status.HTTP_201_CREATED)
def upload_teacher(
    principal: CurrentPrincipal,
    actor: ActorDep,
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    verify: WeightsVerifierDep,
    name: Annotated[str, Form(description="Name jobs will use for this teacher.")],
    arch: Annotated[str, Form(description="timm architecture, e.g. resnet50.")],
    file: Annotated[UploadFile, File(description=".safetensors or torch.save state dict.")],
) -> TeacherOut:
    """Register a teacher from a state dict; 422 with the reason when the file is unsafe,
    damaged or does not load strictly into ``arch`` (classifier keys excepted)."""
    principal.require_write()
    record(session, actor, AuditAction.teacher_upload, created=Teacher, details={"arch": arch})
    upload = file.file
    size = file.size
    if size is None:
        size = upload.seek(0, 2)
        upload.seek(0)
    teacher = register_teacher(
        session,
        store,
        settings,
        team_id=principal.team_id,
        name=name,
        arch=arch,
        upload=upload,
        filename=file.filename or "",
        size=size,
        verify=verify,
    )
    return TeacherOut.model_validate(teacher)


@router.get("/{teacher_id}")
def read_teacher(teacher_id: str, principal: CurrentPrincipal, session: SessionDep) -> TeacherOut:
    return TeacherOut.model_validate(
        get_owned(session, Teacher, teacher_id, principal.team_id, what="teacher")
    )


@router.delete("/{teacher_id}", status_code=status.HTTP_204_NO_CONTENT)
def remove_teacher(
    teacher_id: str,
    principal: CurrentPrincipal,
    actor: ActorDep,
    session: SessionDep,
    store: StoreDep,
) -> Response:
    principal.require_write()
    record(session, actor, AuditAction.teacher_delete, teacher_id)
    delete_teacher(session, store, principal.team_id, teacher_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
