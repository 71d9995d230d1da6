"""foprokd.zoo: registry entries match timm, weights come only from files, checks are strict."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from foprokd.errors import WeightsInvalid, WeightsNotFound
from foprokd.zoo import (
    STUDENTS,
    TEACHERS,
    ModelSpec,
    create_backbone,
    find_hub_cache_weights,
    find_weights,
    load_teacher,
    resolve_spec,
    verify_weights,
)

TINY = "test_resnet"


@pytest.fixture(autouse=True)
def empty_hub_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Point the HF cache at an empty folder so a developer's real cache cannot leak in."""
    cache = tmp_path_factory.mktemp("hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def _published_state_dict(num_classes: int = 1000) -> dict[str, torch.Tensor]:
    """What a published timm checkpoint looks like: backbone plus an ImageNet classifier."""
    torch.manual_seed(0)
    return timm.create_model(TINY, pretrained=False, num_classes=num_classes).state_dict()


@pytest.mark.parametrize(
    "spec", [*TEACHERS.values(), *STUDENTS.values()], ids=lambda s: s.role + ":" + s.name
)
def test_registry_feature_dim_matches_the_timm_model(spec: ModelSpec) -> None:
    with torch.device("meta"):
        model = timm.create_model(
            spec.timm_name, pretrained=False, num_classes=0, **dict(spec.timm_kwargs)
        )
        features = model(torch.empty(2, 3, 224, 224))
    assert features.shape == (2, spec.feature_dim)
    assert len(spec.mean) == len(spec.std) == 3


def test_required_entries_exist() -> None:
    assert {
        "resnet50",
        "resnet18",
        "efficientnet_b0",
        "vit_small_patch14_dinov2",
        "convnext_tiny",
    } <= set(TEACHERS)
    assert {"resnet18", "mobilenetv3_large_100", "efficientnet_b0"} <= set(STUDENTS)
    assert TEACHERS["resnet50"].feature_dim == 2048


def test_any_timm_name_resolves_from_timms_own_config() -> None:
    spec = resolve_spec(TINY, "teacher")
    assert (spec.timm_name, spec.feature_dim, spec.role) == (TINY, 96, "teacher")
    with pytest.raises(KeyError, match="Unknown teacher"):
        resolve_spec("no_such_model_anywhere", "teacher")


def test_find_weights_prefers_safetensors_then_pth(tmp_path: Path) -> None:
    assert find_weights("resnet50", tmp_path) is None
    (tmp_path / "resnet50.pth").write_bytes(b"x")
    assert find_weights("resnet50", tmp_path) == tmp_path / "resnet50.pth"
    (tmp_path / "resnet50.safetensors").write_bytes(b"x")
    assert find_weights("resnet50", tmp_path) == tmp_path / "resnet50.safetensors"


def test_missing_teacher_weights_name_the_exact_paths(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFound) as caught:
        load_teacher("resnet50", weights_dir=tmp_path)
    message = str(caught.value)
    assert f"Put a timm state dict at {tmp_path / 'resnet50.safetensors'}" in message
    assert str(tmp_path / "resnet50.pth") in message
    assert "fopro admin weights add resnet50 FILE" in message
    with pytest.raises(WeightsNotFound):
        load_teacher("resnet50", weights=tmp_path / "absent.safetensors")
    with pytest.raises(WeightsNotFound):
        create_backbone(TINY, weights=None)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_teacher_loads_exactly_the_file_and_stays_frozen(tmp_path: Path, suffix: str) -> None:
    state = _published_state_dict()
    path = tmp_path / f"{TINY}{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    verify_weights(TINY, path)
    teacher = load_teacher(TINY, weights_dir=tmp_path)

    for name, value in teacher.backbone.state_dict().items():
        assert torch.equal(value, state[name]), name
    assert all(not p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training
    assert not teacher.backbone.training
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    features = teacher(x)
    assert features.shape == (2, teacher.feature_dim) == (2, 96)
    features.sum().backward()
    assert x.grad is not None
    assert all(p.grad is None for p in teacher.parameters())


def test_verify_rejects_wrong_shapes_and_missing_keys(tmp_path: Path) -> None:
    state = _published_state_dict()
    wrong = dict(state)
    wrong["conv1.0.weight"] = torch.zeros(1, 1, 1, 1)
    save_file(wrong, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(WeightsInvalid, match=r"shape 1: conv1\.0\.weight"):
        verify_weights(TINY, tmp_path / "wrong.safetensors")

    partial = {k: v for k, v in state.items() if not k.startswith("layer4")}
    save_file(partial, str(tmp_path / "partial.safetensors"))
    with pytest.raises(WeightsInvalid, match="missing"):
        verify_weights(TINY, tmp_path / "partial.safetensors")

    with pytest.raises(WeightsInvalid, match="does not match"):
        verify_weights("resnet18", tmp_path / "partial.safetensors")


class _RunsCodeWhenUnpickled:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_verify_refuses_a_pickle_with_code_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    with path.open("wb") as handle:
        pickle.dump({"conv1.0.weight": _RunsCodeWhenUnpickled(marker)}, handle, protocol=2)
    with pytest.raises(WeightsInvalid, match="not a plain tensor state dict"):
        verify_weights(TINY, path)
    assert not marker.exists()

    (tmp_path / "garbage.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsInvalid):
        verify_weights(TINY, tmp_path / "garbage.safetensors")


def test_offline_hub_cache_is_used_when_present(empty_hub_cache: Path) -> None:
    cfg = timm.models.get_pretrained_cfg(TINY)
    assert cfg is not None
    assert cfg.hf_hub_id is not None
    hub_id = cfg.hf_hub_id
    repo = empty_hub_cache / ("models--" + hub_id.replace("/", "--"))
    snapshot = repo / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    state = _published_state_dict()
    save_file(state, str(snapshot / "model.safetensors"))

    assert find_hub_cache_weights(TINY) == snapshot / "model.safetensors"
    teacher = load_teacher(TINY)
    loaded = teacher.backbone.state_dict()
    assert all(torch.equal(loaded[name], state[name]) for name in loaded)
