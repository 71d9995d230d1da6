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
from tests.support.hub_cache import fill_hub_cache

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


@pytest.mark.parametrize("entry", ENTRIES, ids=[f"{e.role}-{e.name}" for e in ENTRIES])
def test_hub_ids_are_timms_default_weights(entry: catalog.ModelSpec) -> None:
    cfg = timm.models.get_pretrained_cfg(entry.timm_name)
    assert cfg is not None
    assert entry.hf_hub_id == cfg.hf_hub_id


def test_zoo_weights_fall_back_to_the_offline_hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    assert catalog.find_weights("resnet50", weights_dir) is None
    cached = fill_hub_cache(tmp_path / "hub", "timm/resnet50.a1_in1k")
    assert catalog.find_weights("resnet50", weights_dir) == cached
    # The weights dir still wins: it is where an operator puts what they want used.
    (weights_dir / "resnet50.pth").write_bytes(b"x")
    assert catalog.find_weights("resnet50", weights_dir) == weights_dir / "resnet50.pth"
    # Names outside the zoo have no known repo: only the weights dir counts for them.
    assert catalog.find_weights("not-in-the-zoo", weights_dir) is None
