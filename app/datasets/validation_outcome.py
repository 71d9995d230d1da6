"""What a validation run writes on its dataset: ``ready`` or ``invalid`` with everything it found
(``record_validation``), or ``invalid`` after a crash (``mark_failed``). The ingest worker calls
these once the object store is final; each is one guarded transition, so a dataset deleted
meanwhile is left alone."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app.datasets import state
from app.datasets.ingest.validation import IngestResult
from app.datasets.models import Dataset, DatasetStatus
from app.datasets.problems import Problem, ProblemCode
from app.datasets.service import duplicate_upload_warnings


def record_validation(
    session: Session,
    dataset: Dataset,
    result: IngestResult,
    *,
    manifest_key: str | None,
    archive_name: str,
) -> DatasetStatus | None:
    """Move the validating ``dataset`` to ``ready`` (manifest, classes, counts) or ``invalid``
    (problems), with warnings, stats and the archive gone (``archive_key`` cleared).

    Earlier ``duplicate_upload`` warnings are kept; a direct upload's digest is first known here
    (``archive_name`` names its duplicate warnings). Returns the new status, or None when the
    dataset is no longer validating (it was deleted meanwhile).
    """
    warnings = [w for w in dataset.warnings if w.get("code") == ProblemCode.duplicate_upload]
    values: dict[str, Any] = {}
    if dataset.content_sha256 is None and result.archive_sha256 is not None:
        # Direct S3 uploads: the digest is first known here.
        values["content_sha256"] = result.archive_sha256
        warnings += duplicate_upload_warnings(
            session, dataset.team_id, result.archive_sha256, dataset.id, archive_name
        )
    warnings += [w.as_dict() for w in result.log.warnings]
    stats = {
        **result.stats,
        "problem_counts": result.log.error_counts,
        "warning_counts": result.log.warning_counts,
    }
    values["archive_format"] = stats.pop("archive_format", dataset.archive_format)
    values.update(
        warnings=warnings,
        problems=[p.as_dict() for p in result.log.errors],
        stats=stats,
        archive_key=None,
    )
    if result.ok:
        target = DatasetStatus.ready
        values.update(
            classes=result.classes,
            manifest_key=manifest_key,
            num_images=len(result.rows),
            image_bytes=result.image_bytes,
            split_seed=result.split_seed,
        )
        message = f"Validated: {len(result.rows)} images in {len(result.classes)} classes."
    else:
        target = DatasetStatus.invalid
        errors = sum(result.log.error_counts.values())
        message = f"Validation found {errors} problem(s); see the dataset's problems."
    moved = state.transition(
        session,
        dataset.id,
        source=DatasetStatus.validating,
        target=target,
        message=message,
        values=values,
    )
    return target if moved else None


def mark_failed(session: Session, dataset: Dataset, reason: str) -> bool:
    """Move the validating ``dataset`` to ``invalid`` with one ``internal_error`` problem saying
    ``reason``; False when it is no longer validating (nothing is changed then)."""
    problem = Problem(
        dataset.name,
        ProblemCode.internal_error,
        f"{reason}. Upload it again; if it keeps failing, contact support.",
    )
    return state.transition(
        session,
        dataset.id,
        source=DatasetStatus.validating,
        target=DatasetStatus.invalid,
        message=f"Validation failed: {reason}.",
        values={"problems": [problem.as_dict()]},
        data={"code": ProblemCode.internal_error.value},
    )
