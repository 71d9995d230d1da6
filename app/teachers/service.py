"""Teachers: the built-in zoo with its weights, teams' own uploads, and what a job may name.

An upload is screened here without torch, stored, then checked strictly (keys and shapes against
the architecture) by the ``verify_teacher_weights`` task on the cpu queue while the request waits.
Only a file that passes both gets a ``Teacher`` row; any failure removes the stored object.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from celery.exceptions import TimeoutError as ResultTimeout
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.config import Settings, get_settings
from app.core.db import new_id
from app.core.errors import Conflict, InvalidInput, PayloadTooLarge, ServiceUnavailable
from app.core.queue import TaskName, get_celery
from app.core.storage import ObjectStore
from app.core.tenancy import get_owned, scoped, team_object_key
from app.jobs.models import Job, JobStatus
from app.teachers.models import Teacher
from app.teachers.schemas import WeightsCheck, ZooTeacherOut
from app.teachers.weights_file import WeightsFileRejected, screen_weights_file
from app.teams.quotas import check_storage
from foprokd.catalog import (
    STUDENTS,
    TEACHERS,
    WEIGHT_SUFFIXES,
    ModelSpec,
    expected_weight_paths,
    find_weights,
)

# Verification builds the model on the meta device: seconds, plus fetching the file.
VERIFY_TIMEOUT_S = 120.0
TEACHER_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
ARCH_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.]{0,99}$")

WeightsVerifier = Callable[[str, str], WeightsCheck]
"""(object key, timm architecture) -> the worker's verdict on the stored weights file."""
WeightsVerifierOfFile = Callable[[str, Path], WeightsCheck]
"""(zoo name, local file) -> the torch verdict (``workers.teacher_checks.inspect_weights``)."""


class TeacherWeightsMissing(InvalidInput):
    code = "teacher_weights_missing"


class UnknownTeacher(InvalidInput):
    code = "unknown_teacher"


class TeacherExists(Conflict):
    code = "teacher_exists"


class TeacherInUse(Conflict):
    code = "teacher_in_use"


@dataclass(frozen=True)
class TeacherChoice:
    """What a job needs to load the teacher a user named.

    Zoo teachers load from ``weights_path`` on the worker's weights dir; team teachers from the
    object ``weights_key`` (verified at upload, digest ``weights_sha256``).
    """

    name: str
    source: Literal["zoo", "team"]
    arch: str
    feature_dim: int
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_params: int | None
    weights_path: Path | None
    weights_key: str | None
    weights_sha256: str | None


def zoo_teachers(settings: Settings, *, absolute_paths: bool = False) -> list[ZooTeacherOut]:
    """The built-in teachers with where their weights were found in ``settings.weights_dir``:
    relative to it, or (``absolute_paths``, for admins) as the server's file-system paths."""
    weights_dir = _weights_dir(settings)

    def shown(path: Path) -> str:
        if absolute_paths or not path.is_relative_to(weights_dir):
            return str(path) if absolute_paths else path.name
        return str(path.relative_to(weights_dir))

    return [
        ZooTeacherOut(
            name=entry.name,
            arch=entry.timm_name,
            num_params=entry.num_params,
            feature_dim=entry.feature_dim,
            input_size=entry.input_size,
            mean=list(entry.mean),
            std=list(entry.std),
            weights_available=(found := find_weights(entry.name, weights_dir)) is not None,
            weights_path=shown(found) if found else None,
            expected_paths=[shown(p) for p in expected_weight_paths(entry.name, weights_dir)],
        )
        for entry in TEACHERS.values()
    ]


def team_teachers(session: Session, team_id: str) -> list[Teacher]:
    """The team's own teachers, by name."""
    return list(session.scalars(scoped(Teacher, team_id).order_by(Teacher.name)))


def resolve_teacher(
    session: Session,
    team_id: str,
    name: str,
    *,
    require_weights: bool = True,
    settings: Settings | None = None,
) -> TeacherChoice:
    """The teacher ``name`` means for this team, for a job submit.

    Raises UnknownTeacher (422) for a name that is neither built in nor the team's, and, when
    ``require_weights``, TeacherWeightsMissing (422) naming the exact file(s) to fill for a zoo
    teacher whose weights are not in the weights dir. Pass ``require_weights=False`` when the run
    will not load the teacher's weights (teacher-less methods, test-only random weights); the
    choice's ``weights_path`` is then None if nothing is installed.
    """
    entry = TEACHERS.get(name)
    if entry is not None:
        weights_dir = _weights_dir(settings or get_settings())
        return _zoo_choice(entry, weights_dir, require_weights=require_weights)
    row = session.scalar(scoped(Teacher, team_id).where(Teacher.name == name))
    if row is None:
        raise UnknownTeacher(
            f"Unknown teacher {name!r}. Built-in: {', '.join(sorted(TEACHERS))}; "
            "or register your own with POST /v1/teachers.",
            details={"teacher": name},
        )
    return TeacherChoice(
        name=row.name,
        source="team",
        arch=row.arch,
        feature_dim=row.feature_dim,
        input_size=row.input_size,
        mean=tuple(row.mean),
        std=tuple(row.std),
        num_params=row.num_params,
        weights_path=None,
        weights_key=row.weights_key,
        weights_sha256=row.weights_sha256,
    )


def _zoo_choice(entry: ModelSpec, weights_dir: Path, *, require_weights: bool) -> TeacherChoice:
    found = find_weights(entry.name, weights_dir)
    if found is None and require_weights:
        expected = expected_weight_paths(entry.name, weights_dir)
        raise TeacherWeightsMissing(
            f"Teacher weights for {entry.name!r} are not installed. Put a timm state dict at "
            f"{expected[0]} (or {', '.join(str(p) for p in expected[1:])}), e.g. with "
            f"`fopro admin weights pull {entry.name}` (online) or "
            f"`fopro admin weights add {entry.name} FILE`, then submit again.",
            details={"teacher": entry.name, "expected_paths": [str(p) for p in expected]},
        )
    return TeacherChoice(
        name=entry.name,
        source="zoo",
        arch=entry.timm_name,
        feature_dim=entry.feature_dim,
        input_size=entry.input_size,
        mean=entry.mean,
        std=entry.std,
        num_params=entry.num_params,
        weights_path=found,
        weights_key=None,
        weights_sha256=None,
    )


def verify_on_worker(
    object_key: str, arch: str, *, timeout_s: float = VERIFY_TIMEOUT_S
) -> WeightsCheck:
    """Run ``verify_teacher_weights`` on a cpu worker and wait for its verdict.

    Raises ServiceUnavailable when no worker answers within ``timeout_s`` seconds.
    """
    # send_task directly (not queue.send): we need the AsyncResult, and a message that outlives
    # our wait must expire instead of being verified for nobody.
    result = get_celery().send_task(
        TaskName.verify_teacher_weights.value, args=[object_key, arch], expires=timeout_s
    )
    try:
        reply = result.get(timeout=timeout_s, propagate=True)
    except ResultTimeout as exc:
        raise ServiceUnavailable(
            f"No worker verified the weights within {timeout_s:.0f} s. Check that a worker serves "
            "the cpu queue (`fopro worker --queues cpu`) and upload again."
        ) from exc
    except Exception as exc:  # the task itself crashed: the worker log has the traceback
        raise ServiceUnavailable(
            f"The worker could not verify the weights ({type(exc).__name__}); see its log and "
            "upload again."
        ) from exc
    finally:
        result.forget()
    return WeightsCheck.model_validate(reply)


def register_teacher(
    session: Session,
    store: ObjectStore,
    settings: Settings,
    *,
    team_id: str,
    name: str,
    arch: str,
    upload: BinaryIO,
    filename: str,
    size: int,
    verify: WeightsVerifier,
) -> Teacher:
    """Screen, store and verify an uploaded weights file, then commit the team's teacher.

    ``upload`` is a seekable file of ``size`` bytes. Raises WeightsFileRejected (422) with the
    reason, TeacherExists (409), PayloadTooLarge (413, also past the team's storage quota) or
    ServiceUnavailable (503); in every
    failure no object and no row remain.
    """
    name, arch = name.strip(), arch.strip()
    if not TEACHER_NAME_PATTERN.match(name):
        raise InvalidInput(
            f"Teacher name {name!r} must be 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    if name in TEACHERS:
        raise TeacherExists(f"{name!r} is a built-in teacher; pick another name.")
    if not ARCH_PATTERN.match(arch):
        raise InvalidInput(f"Architecture {arch!r} is not a timm model name (e.g. resnet50).")
    if session.scalar(scoped(Teacher, team_id).where(Teacher.name == name)) is not None:
        raise TeacherExists(f"Your team already has a teacher named {name!r}.")
    if size > settings.max_upload_bytes:
        raise PayloadTooLarge(
            f"The weights file has {size} bytes; the limit is {settings.max_upload_bytes}."
        )
    check_storage(session, team_id, settings, size)
    screened = screen_weights_file(upload, filename)

    teacher_id = new_id("tch")
    key = team_object_key(team_id, "teachers", teacher_id, f"weights{screened.suffix}")
    info = store.put(key, upload, size=size)
    try:
        check = verify(key, arch)
        if not check.ok:
            raise WeightsFileRejected(
                f"The weights do not load into {arch}: {check.reason}", details={"arch": arch}
            )
        teacher = Teacher(
            id=teacher_id,
            team_id=team_id,
            name=name,
            arch=check.arch or arch,
            feature_dim=check.feature_dim or 0,
            input_size=check.input_size or 0,
            mean=check.mean or [],
            std=check.std or [],
            num_params=check.num_params or 0,
            weights_key=key,
            weights_sha256=info.sha256 or "",
            weights_bytes=info.size,
        )
        session.add(teacher)
        try:
            session.commit()
        except IntegrityError as exc:
            session.rollback()
            raise TeacherExists(f"Your team already has a teacher named {name!r}.") from exc
    except BaseException:
        store.delete(key)
        raise
    return teacher


def delete_teacher(session: Session, store: ObjectStore, team_id: str, teacher_id: str) -> None:
    """Remove a team teacher and its weights; refused while a queued or running job names it."""
    teacher = get_owned(session, Teacher, teacher_id, team_id, what="teacher")
    active = session.scalar(
        scoped(Job, team_id)
        .where(Job.teacher == teacher.name)
        .where(Job.status.in_([JobStatus.queued.value, JobStatus.running.value]))
        .limit(1)
    )
    if active is not None:
        raise TeacherInUse(
            f"Job {active.id} ({active.status}) uses teacher {teacher.name!r}; cancel it or wait "
            "until it ends, then delete the teacher."
        )
    session.delete(teacher)
    session.commit()
    store.delete(teacher.weights_key)


@dataclass(frozen=True)
class InstalledWeights:
    path: Path
    sha256: str
    bytes: int
    check: WeightsCheck


def zoo_entry(name: str) -> ModelSpec:
    """The built-in teacher or student called ``name``; InvalidInput listing the known ones."""
    entry = TEACHERS.get(name) or STUDENTS.get(name)
    if entry is None:
        known = sorted(set(TEACHERS) | set(STUDENTS))
        raise InvalidInput(f"{name!r} is not a built-in model; known: {', '.join(known)}.")
    return entry


def install_zoo_weights(
    name: str,
    source: Path,
    weights_dir: Path,
    *,
    verify: WeightsVerifierOfFile,
    expected_sha256: str | None = None,
) -> InstalledWeights:
    """Verify ``source`` for zoo entry ``name`` and install it atomically into ``weights_dir``.

    ``verify(arch, path)`` is the torch check (``workers.teacher_checks.inspect_weights``);
    ``expected_sha256`` (a download's published digest) must match the bytes installed.
    The file lands as ``<weights_dir>/<name>.safetensors|.pth``; a file of the other suffix is
    removed so the engine's lookup finds the new one. Raises WeightsFileRejected or InvalidInput.
    """
    entry = zoo_entry(name)
    if not source.is_file():
        raise InvalidInput(f"{source} is not a file.")
    with source.open("rb") as handle:
        screened = screen_weights_file(handle, source.name)
    check = verify(entry.name, source)
    if not check.ok:
        raise WeightsFileRejected(f"{source} does not load into {entry.name}: {check.reason}")

    weights_dir.mkdir(parents=True, exist_ok=True)
    target = weights_dir / f"{name}{screened.suffix}"
    temp = weights_dir / f".{target.name}.tmp-{os.getpid()}"
    digest = hashlib.sha256()
    try:
        with source.open("rb") as reader, temp.open("wb") as writer:
            while chunk := reader.read(1024 * 1024):
                digest.update(chunk)
                writer.write(chunk)
            writer.flush()
            os.fsync(writer.fileno())
        if expected_sha256 is not None and digest.hexdigest() != expected_sha256.lower():
            raise WeightsFileRejected(
                f"{source} is corrupted: its sha256 is {digest.hexdigest()}, the publisher's "
                f"is {expected_sha256}; nothing was installed."
            )
        temp.replace(target)
    finally:
        temp.unlink(missing_ok=True)
    for suffix in WEIGHT_SUFFIXES:
        if suffix != screened.suffix:
            (weights_dir / f"{name}{suffix}").unlink(missing_ok=True)
    return InstalledWeights(target, digest.hexdigest(), target.stat().st_size, check)


def _weights_dir(settings: Settings) -> Path:
    assert settings.weights_dir is not None  # Settings fills it from the data dir
    return settings.weights_dir
