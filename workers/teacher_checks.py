"""Verifying teacher weights with torch: the strict key/shape check the API cannot do itself.

The API screens uploads without torch (``app.teachers.weights_file``) and then waits on
``verify_teacher_weights`` here; ``fopro admin weights add`` calls ``inspect_weights`` directly.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from app.core.config import get_settings
from app.core.queue import TaskName
from app.core.storage import ObjectNotFound, open_object_store
from app.teachers.schemas import WeightsCheck
from workers.celery_app import celery_app


def inspect_weights(arch: str, path: Path) -> WeightsCheck:
    """Load ``path`` with ``weights_only=True`` and check it strictly against timm ``arch``
    (classifier keys may be extra); on success report the backbone's parameters, feature size,
    input size and normalisation. Never raises for a bad file: the verdict says why."""
    import torch

    from foprokd.errors import WeightsInvalid
    from foprokd.zoo import create_backbone, resolve_spec, verify_weights

    try:
        spec = resolve_spec(arch, "teacher")
    except KeyError as exc:
        return WeightsCheck(ok=False, reason=f"{arch!r} is not a timm architecture ({exc.args[0]})")
    timm_kwargs = dict(spec.timm_kwargs)
    try:
        verify_weights(spec.timm_name, path, **timm_kwargs)
    except WeightsInvalid as exc:
        return WeightsCheck(ok=False, reason=exc.reason)
    # The meta device gives shapes without allocating: counting a large teacher costs nothing.
    with torch.device("meta"):
        backbone = create_backbone(spec.timm_name, weights=None, allow_random=True, **timm_kwargs)
    return WeightsCheck(
        ok=True,
        arch=spec.timm_name,
        num_params=sum(p.numel() for p in backbone.parameters()),
        feature_dim=spec.feature_dim,
        input_size=spec.input_size,
        mean=list(spec.mean),
        std=list(spec.std),
    )


@celery_app.task(name=TaskName.verify_teacher_weights.value)
def verify_teacher_weights(object_key: str, arch: str) -> dict[str, Any]:
    """Fetch an uploaded weights object to a temp file and return ``inspect_weights``' verdict."""
    store = open_object_store(get_settings())
    suffix = PurePosixPath(object_key).suffix
    with tempfile.TemporaryDirectory(prefix="fopro-weights-") as tmp:
        local = Path(tmp) / f"weights{suffix}"
        try:
            with store.open(object_key) as source, local.open("wb") as target:
                shutil.copyfileobj(source, target, length=1024 * 1024)
        except ObjectNotFound:
            # The API gave up waiting and removed the upload before this task ran.
            return WeightsCheck(ok=False, reason="the upload was withdrawn").model_dump()
        return inspect_weights(arch, local).model_dump()
