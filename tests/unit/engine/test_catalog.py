"""The zoo table the API reads without torch describes exactly what the engine builds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

from foprokd import catalog
from foprokd.zoo import backbone_feature_dim, resolve_spec

ENTRIES = [*catalog.TEACHERS.values(), *catalog.STUDENTS.values()]


def test_catalog_imports_without_torch() -> None:
    code = (
        "import sys, foprokd.catalog; "
        "assert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'timm')]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("entry", ENTRIES, ids=[f"{e.role}-{e.name}" for e in ENTRIES])
def test_feature_dim_and_parameter_count_are_timms(entry: catalog.ModelSpec) -> None:
    with torch.device("meta"):
        backbone = timm.create_model(
            entry.timm_name, pretrained=False, num_classes=0, **dict(entry.timm_kwargs)
        )
    assert entry.num_params == sum(p.numel() for p in backbone.parameters())
    assert entry.feature_dim == backbone_feature_dim(backbone)
    assert resolve_spec(entry.name, entry.role) is entry


def test_weights_lookup_prefers_safetensors(tmp_path: Path) -> None:
    assert catalog.find_weights("resnet50", tmp_path) is None
    (tmp_path / "resnet50.pth").write_bytes(b"x")
    assert catalog.find_weights("resnet50", tmp_path) == tmp_path / "resnet50.pth"
    (tmp_path / "resnet50.safetensors").write_bytes(b"x")
    assert catalog.find_weights("resnet50", tmp_path) == tmp_path / "resnet50.safetensors"
    assert catalog.expected_weight_paths("resnet50", tmp_path) == [
        tmp_path / "resnet50.safetensors",
        tmp_path / "resnet50.pth",
    ]
