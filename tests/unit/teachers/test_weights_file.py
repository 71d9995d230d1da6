"""The torch-free screen refuses unsafe, damaged and foreign files and passes real checkpoints."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save
from torch._weights_only_unpickler import _get_allowed_globals

from app.teachers.weights_file import (
    WEIGHTS_ONLY_GLOBALS,
    WeightsFileRejected,
    screen_weights_file,
    stored_suffix,
)
from tests.unit.teachers.conftest import Malicious

STATE = {"conv.weight": torch.randn(4, 3, 3, 3), "bn.num_batches_tracked": torch.tensor(3)}


def torch_bytes(obj: object, *, zip_format: bool = True) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=zip_format)
    return buffer.getvalue()


def rejection(data: bytes, filename: str) -> str:
    with pytest.raises(WeightsFileRejected) as caught:
        screen_weights_file(io.BytesIO(data), filename)
    assert caught.value.status_code == 422
    return caught.value.message


def test_allow_list_is_torchs_weights_only_allow_list() -> None:
    assert set(_get_allowed_globals()) == WEIGHTS_ONLY_GLOBALS


@pytest.mark.parametrize(
    ("data", "filename", "fmt"),
    [
        (save(STATE), "w.safetensors", "safetensors"),
        (torch_bytes(STATE), "w.pth", "torch-zip"),
        (torch_bytes(STATE, zip_format=False), "w.pt", "torch-legacy"),
        (torch_bytes({"state_dict": STATE, "epoch": 3}), "w.bin", "torch-zip"),
    ],
)
def test_real_checkpoints_pass(data: bytes, filename: str, fmt: str) -> None:
    handle = io.BytesIO(data)
    handle.seek(5)
    screened = screen_weights_file(handle, filename)
    assert screened.format == fmt
    assert handle.tell() == 0
    if fmt == "safetensors":
        assert screened.num_tensors == len(STATE)


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_plain_pickle_with_code_is_refused_naming_the_import(protocol: int) -> None:
    data = pickle.dumps({"w": Malicious()}, protocol=protocol)
    assert f"imports {os.system.__module__}.system" in rejection(data, "evil.pth")


@pytest.mark.parametrize("zip_format", [True, False])
def test_torch_save_with_code_is_refused(zip_format: bool) -> None:
    data = torch_bytes({**STATE, "payload": Malicious()}, zip_format=zip_format)
    assert "could run code" in rejection(data, "evil.pth")


def test_stack_global_built_from_memoized_strings_is_resolved() -> None:
    # builtins.eval spelled with STACK_GLOBAL after the strings went through the memo.
    data = (
        b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00"
        b"\x8c\x08builtins\x94\x8c\x04eval\x94h\x00h\x01\x93\x8c\x011\x85R."
    )
    assert "imports builtins.eval" in rejection(data, "evil.pth")


def test_truncated_safetensors_is_refused() -> None:
    assert "truncated" in rejection(save(STATE)[:-7], "w.safetensors")
    assert "truncated" in rejection(b"\x01\x02", "w.safetensors")


def test_safetensors_header_lies_are_refused() -> None:
    header = {"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}}
    body = json.dumps(header).encode()
    data = struct.pack("<Q", len(body)) + body + bytes(12)
    assert "needs 16 bytes" in rejection(data, "w.safetensors")
    huge = struct.pack("<Q", 10**12) + b"{}"
    assert "header claims" in rejection(huge, "w.safetensors")
    assert "no tensors" in rejection(struct.pack("<Q", 2) + b"{}", "w.safetensors")


def test_truncated_torch_files_are_refused() -> None:
    zipped = torch_bytes(STATE)
    assert "truncated or damaged" in rejection(zipped[: len(zipped) // 2], "w.pth")
    legacy = torch_bytes(STATE, zip_format=False)
    assert "truncated" in rejection(legacy[:40], "w.pth")


def test_other_files_are_refused() -> None:
    assert "magic number" in rejection(pickle.dumps({"a": 1}, protocol=2), "w.pth")
    assert "not a torch.save archive" in rejection(_zip_without_pickle(), "w.pth")
    with pytest.raises(WeightsFileRejected, match=r"\.safetensors file or a torch.save"):
        stored_suffix("weights.ckpt")


def test_stored_suffix_is_what_the_engine_loads_by() -> None:
    assert stored_suffix("A.SAFETENSORS") == ".safetensors"
    assert {stored_suffix(n) for n in ("a.pth", "a.pt", "a.bin")} == {".pth"}


def _zip_without_pickle() -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/readme.txt", "hello")
    return buffer.getvalue()


def test_screen_reads_files_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    path.write_bytes(save(STATE))
    with path.open("rb") as handle:
        assert screen_weights_file(handle, path.name).format == "safetensors"
