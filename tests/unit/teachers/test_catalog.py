"""The API's torch-free zoo table is the engine's registry, number for number."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import timm
import torch

from app.teachers import catalog
from foprokd import zoo


@pytest.mark.parametrize(
    ("table", "registry"),
    [(catalog.ZOO_TEACHERS, zoo.TEACHERS), (catalog.ZOO_STUDENTS, zoo.STUDENTS)],
    ids=["teachers", "students"],
)
def test_table_equals_engine_registry(
    table: dict[str, catalog.ZooEntry], registry: dict[str, zoo.ModelSpec]
) -> None:
    assert list(table) == list(registry)
    for name, entry in table.items():
        described = {k: v for k, v in dataclasses.asdict(entry).items() if k != "num_params"}
        assert described == dataclasses.asdict(registry[name]), name


@pytest.mark.parametrize("entry", [*catalog.ZOO_TEACHERS.values(), *catalog.ZOO_STUDENTS.values()])
def test_parameter_count_is_timms(entry: catalog.ZooEntry) -> None:
    with torch.device("meta"):
        backbone = timm.create_model(
            entry.timm_name, pretrained=False, num_classes=0, **dict(entry.timm_kwargs)
        )
    assert entry.num_params == sum(p.numel() for p in backbone.parameters())


def test_weights_lookup_matches_engine(tmp_path: Path) -> None:
    assert catalog.WEIGHT_SUFFIXES == zoo.WEIGHT_SUFFIXES
    assert catalog.find_zoo_weights("resnet50", tmp_path) is None
    (tmp_path / "resnet50.pth").write_bytes(b"x")
    assert catalog.find_zoo_weights("resnet50", tmp_path) == zoo.find_weights("resnet50", tmp_path)
    (tmp_path / "resnet50.safetensors").write_bytes(b"x")
    found = catalog.find_zoo_weights("resnet50", tmp_path)
    assert found == zoo.find_weights("resnet50", tmp_path) == tmp_path / "resnet50.safetensors"
    assert catalog.expected_weight_paths("resnet50", tmp_path) == zoo.expected_weight_paths(
        "resnet50", tmp_path
    )
