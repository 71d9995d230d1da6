"""Torch-free screening of an uploaded weights file before anything loads it.

Two formats are accepted, told apart by the file name:

* ``.safetensors``: the 8-byte little-endian header length and the JSON header are parsed and
  every tensor's dtype, shape and byte range are checked against the file size, so a truncated or
  inconsistent file is refused here.
* ``.pth`` / ``.pt`` / ``.bin``: a ``torch.save`` file (a zip archive holding ``data.pkl``, or the
  legacy sequence of pickles). Its pickle opcodes are walked with ``pickletools`` (nothing is
  unpickled) and any import of a name outside ``torch.load(weights_only=True)``'s allow-list is
  refused: such a file would run code when a plain ``torch.load`` opens it.

The screen is the fast first line; the worker's strict key/shape check (``torch.load`` with
``weights_only=True``, then ``load_state_dict`` into the architecture) is the authority.
"""

from __future__ import annotations

import json
import pickletools
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from math import prod
from typing import IO, Any, Literal

from app.core.errors import InvalidInput

SAFETENSORS_SUFFIX = ".safetensors"
TORCH_SUFFIXES = (".pth", ".pt", ".bin")
# The safetensors library refuses headers above 100 MB; so do we.
MAX_SAFETENSORS_HEADER_BYTES = 100_000_000
# torch.save's legacy format: magic number, protocol, sys info, the object, the storage keys.
LEGACY_TORCH_PICKLES = 5
LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
ZIP_LOCAL_HEADER = b"PK\x03\x04"

SAFETENSORS_DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}

# Exactly the globals torch.load(weights_only=True) resolves by default in torch 2.14
# (torch/_weights_only_unpickler.py::_get_allowed_globals); a unit test checks it against torch.
_STORAGE_DTYPES = [
    "BFloat16",
    "Bool",
    "Byte",
    "Char",
    "ComplexDouble",
    "ComplexFloat",
    "Double",
    "Float",
    "Half",
    "Int",
    "Long",
    "Short",
]
_TENSOR_DTYPES = [
    "BFloat16",
    "Bool",
    "Byte",
    "Char",
    "Double",
    "Float",
    "Half",
    "Int",
    "Long",
    "Short",
]
_SPARSE_DTYPES = ["BFloat16", "Byte", "Char", "Double", "Float", "Half", "Int", "Long", "Short"]
_TORCH_DTYPES = [
    "bcomplex32",
    "bfloat16",
    "bits16",
    "bits1x8",
    "bits2x4",
    "bits4x2",
    "bits8",
    "bool",
    "complex128",
    "complex32",
    "complex64",
    "float16",
    "float32",
    "float4_e2m1fn_x2",
    "float64",
    "float8_e4m3fn",
    "float8_e4m3fnuz",
    "float8_e5m2",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
    "qint32",
    "qint8",
    "quint2x4",
    "quint4x2",
    "quint8",
]
_REBUILD_FUNCTIONS = [
    "device_tensor_from_cpu_tensor",
    "device_tensor_from_numpy",
    "meta_tensor_no_storage",
    "nested_tensor",
    "parameter",
    "parameter_with_state",
    "qtensor",
    "sparse_tensor",
    "tensor",
    "tensor_v2",
    "tensor_v3",
    "wrapper_subclass",
]
WEIGHTS_ONLY_GLOBALS: frozenset[str] = frozenset(
    [
        "_codecs.encode",
        "builtins.bytearray",
        "builtins.complex",
        "builtins.set",
        "collections.Counter",
        "collections.OrderedDict",
        "torch.Size",
        "torch.Tensor",
        "torch.device",
        "torch.nn.parameter.Parameter",
        "torch.serialization._get_layout",
        "torch._tensor._rebuild_from_type_v2",
        "torch.storage.TypedStorage",
        "torch.storage.UntypedStorage",
        *(f"torch.{kind}Storage" for kind in ("QInt32", "QInt8", "QUInt2x4", "QUInt4x2", "QUInt8")),
        *(f"torch.per_{scheme}" for scheme in ("channel_affine", "channel_symmetric")),
        *(f"torch.per_{scheme}" for scheme in ("channel_affine_float_qparams", "tensor_affine")),
        "torch.per_tensor_symmetric",
        *(f"torch{where}.{kind}Storage" for where in ("", ".cuda") for kind in _STORAGE_DTYPES),
        *(f"torch{where}.{kind}Tensor" for where in ("", ".cuda") for kind in _TENSOR_DTYPES),
        *(
            f"torch{where}.sparse.{kind}Tensor"
            for where in ("", ".cuda")
            for kind in _SPARSE_DTYPES
        ),
        *(f"torch.{dtype}" for dtype in _TORCH_DTYPES),
        *(f"torch.{sign}int{bits}" for sign in ("", "u") for bits in (1, 2, 3, 4, 5, 6, 7)),
        *(f"torch.{sign}int{bits}" for sign in ("", "u") for bits in (8, 16, 32, 64)),
        *(f"torch._utils._rebuild_{function}" for function in _REBUILD_FUNCTIONS),
    ]
)

WeightsFormat = Literal["safetensors", "torch-zip", "torch-legacy"]


class WeightsFileRejected(InvalidInput):
    """The uploaded weights file is unsafe, truncated or not a tensor file (HTTP 422)."""

    code = "weights_invalid"


@dataclass(frozen=True)
class ScreenedWeights:
    """What the screen learnt: the format, and for safetensors the number of tensors."""

    format: WeightsFormat
    suffix: str  # the suffix the engine loads this format by: .safetensors or .pth
    num_tensors: int | None


def stored_suffix(filename: str) -> str:
    """``.safetensors`` or ``.pth`` for an accepted file name; raises WeightsFileRejected."""
    lowered = filename.lower()
    if lowered.endswith(SAFETENSORS_SUFFIX):
        return SAFETENSORS_SUFFIX
    if lowered.endswith(TORCH_SUFFIXES):
        return ".pth"
    raise WeightsFileRejected(
        f"{filename!r}: weights must be a .safetensors file or a torch.save file "
        f"({', '.join(TORCH_SUFFIXES)})."
    )


def screen_weights_file(handle: IO[bytes], filename: str) -> ScreenedWeights:
    """Check ``handle`` (seekable, positioned anywhere) without unpickling or importing torch.

    Raises WeightsFileRejected with the reason: unsafe pickle, truncated or inconsistent file,
    unknown format. Leaves the position at the start of the file.
    """
    suffix = stored_suffix(filename)
    handle.seek(0, 2)
    size = handle.tell()
    handle.seek(0)
    try:
        if suffix == SAFETENSORS_SUFFIX:
            return ScreenedWeights("safetensors", suffix, _screen_safetensors(handle, size))
        if zipfile.is_zipfile(handle):
            handle.seek(0)
            _screen_torch_zip(handle)
            return ScreenedWeights("torch-zip", suffix, None)
        handle.seek(0)
        if handle.read(4) == ZIP_LOCAL_HEADER:
            raise WeightsFileRejected(
                "torch.save archive is truncated or damaged (zip directory missing)."
            )
        handle.seek(0)
        _screen_torch_legacy(handle)
        return ScreenedWeights("torch-legacy", suffix, None)
    finally:
        handle.seek(0)


def _screen_safetensors(handle: IO[bytes], size: int) -> int:
    prefix = handle.read(8)
    if len(prefix) < 8:
        raise WeightsFileRejected(
            f"safetensors file is truncated: {size} bytes, no 8-byte header length."
        )
    (header_len,) = struct.unpack("<Q", prefix)
    if header_len > MAX_SAFETENSORS_HEADER_BYTES or 8 + header_len > size:
        raise WeightsFileRejected(
            f"safetensors header claims {header_len} bytes but the file has {size} bytes: "
            "truncated or not a safetensors file."
        )
    try:
        header = json.loads(handle.read(header_len).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsFileRejected(f"safetensors header is not valid JSON ({exc}).") from exc
    if not isinstance(header, dict):
        raise WeightsFileRejected("safetensors header is not a JSON object.")
    header.pop("__metadata__", None)
    if not header:
        raise WeightsFileRejected("safetensors file holds no tensors.")
    data_bytes = size - 8 - header_len
    spans = sorted(_tensor_span(name, info) for name, info in header.items())
    end = 0
    for begin, stop, name in spans:
        if begin != end:
            raise WeightsFileRejected(
                f"safetensors tensor {name!r} starts at byte {begin}, expected {end}."
            )
        end = stop
    if end != data_bytes:
        raise WeightsFileRejected(
            f"safetensors tensors need {end} data bytes but the file has {data_bytes}: "
            + ("truncated." if end > data_bytes else "trailing bytes.")
        )
    return len(spans)


def _tensor_span(name: str, info: Any) -> tuple[int, int, str]:
    """(begin, end, name) of one header entry after checking its dtype, shape and byte size."""
    if not isinstance(info, dict):
        raise WeightsFileRejected(f"safetensors entry {name!r} is not an object.")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in SAFETENSORS_DTYPE_BYTES:
        raise WeightsFileRejected(f"safetensors tensor {name!r} has unsupported dtype {dtype!r}.")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise WeightsFileRejected(f"safetensors tensor {name!r} has an invalid shape {shape!r}.")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise WeightsFileRejected(
            f"safetensors tensor {name!r} has invalid data_offsets {offsets!r}."
        )
    expected = prod(shape) * SAFETENSORS_DTYPE_BYTES[dtype]
    if offsets[1] - offsets[0] != expected:
        raise WeightsFileRejected(
            f"safetensors tensor {name!r} ({dtype} {shape}) needs {expected} bytes, "
            f"its data_offsets span {offsets[1] - offsets[0]}."
        )
    return offsets[0], offsets[1], name


def _screen_torch_zip(handle: IO[bytes]) -> None:
    try:
        archive = zipfile.ZipFile(handle)
    except zipfile.BadZipFile as exc:
        raise WeightsFileRejected(f"torch.save archive is damaged ({exc}).") from exc
    with archive:
        pickles = [n for n in archive.namelist() if n.rsplit("/", 1)[-1] == "data.pkl"]
        if len(pickles) != 1:
            raise WeightsFileRejected(
                f"not a torch.save archive: expected exactly one data.pkl, found {len(pickles)}."
            )
        try:
            with archive.open(pickles[0]) as pickled:
                screen_pickle(pickled)
        except (zipfile.BadZipFile, EOFError, OSError) as exc:
            raise WeightsFileRejected(f"torch.save archive is damaged ({exc}).") from exc


def _screen_torch_legacy(handle: IO[bytes]) -> None:
    for index in range(LEGACY_TORCH_PICKLES):
        first_value = screen_pickle(handle)
        if index == 0 and first_value != LEGACY_TORCH_MAGIC:
            raise WeightsFileRejected(
                "not a torch.save file: neither a zip archive nor the legacy format "
                "(wrong magic number)."
            )


class _Mark:
    """The MARK sentinel on the simulated pickle stack."""


_MARK = _Mark()
_STRING_OPS = frozenset(
    {
        "STRING",
        "BINSTRING",
        "SHORT_BINSTRING",
        "UNICODE",
        "SHORT_BINUNICODE",
        "BINUNICODE",
        "BINUNICODE8",
    }
)
_INT_OPS = frozenset({"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"})


def screen_pickle(stream: IO[bytes]) -> object:
    """Walk one pickle (up to its STOP) and refuse any import outside ``WEIGHTS_ONLY_GLOBALS``.

    Nothing is unpickled: a tiny symbolic stack tracks only the string constants that
    STACK_GLOBAL takes its module and name from. Returns the pickle's top-level value when it is a
    plain int (the legacy torch.save magic number), else None.
    """
    stack: list[object] = []
    memo: dict[int, object] = {}
    try:
        for opcode, arg, _pos in _opcodes(stream):
            name = opcode.name
            if name in {"GLOBAL", "INST"}:
                _check_import(str(arg).replace(" ", "."))
            elif name == "STACK_GLOBAL":
                module, attr = (stack[-2], stack[-1]) if len(stack) >= 2 else (None, None)
                if not isinstance(module, str) or not isinstance(attr, str):
                    raise WeightsFileRejected(
                        "the pickle imports a name it computes at load time; refused."
                    )
                _check_import(f"{module}.{attr}")
            elif name in {"EXT1", "EXT2", "EXT4"}:
                raise WeightsFileRejected(
                    "the pickle imports through the copyreg extension registry; refused."
                )
            if name in {"PUT", "BINPUT", "LONG_BINPUT"}:
                memo[int(arg)] = stack[-1]
                continue
            if name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
                continue
            if name in {"GET", "BINGET", "LONG_BINGET"}:
                stack.append(memo.get(int(arg)))
                continue
            if name == "DUP":
                stack.append(stack[-1])
                continue
            if name == "STOP":
                return stack[-1] if stack and isinstance(stack[-1], int) else None
            _apply_stack_effect(stack, opcode, arg)
    except IndexError as exc:
        raise WeightsFileRejected("the pickle is malformed (stack underflow).") from exc
    raise WeightsFileRejected("the pickle ends without STOP: truncated.")


def _opcodes(stream: IO[bytes]) -> Iterator[tuple[pickletools.OpcodeInfo, Any, int | None]]:
    try:
        yield from pickletools.genops(stream)
    except ValueError as exc:
        raise WeightsFileRejected(f"the pickle is truncated or malformed ({exc}).") from exc


def _check_import(dotted: str) -> None:
    if dotted not in WEIGHTS_ONLY_GLOBALS:
        raise WeightsFileRejected(
            f"the pickle imports {dotted}, which torch.load(weights_only=True) does not allow: "
            "loading it could run code. Save a plain state dict (or use .safetensors)."
        )


def _apply_stack_effect(stack: list[object], opcode: pickletools.OpcodeInfo, arg: Any) -> None:
    before = opcode.stack_before
    if pickletools.markobject in before:
        while stack.pop() is not _MARK:
            pass
        below_mark = before.index(pickletools.markobject)
        for _ in range(below_mark):
            stack.pop()
    else:
        for _ in before:
            stack.pop()
    if opcode.name in _STRING_OPS:
        stack.append(arg.decode("latin-1") if isinstance(arg, bytes) else arg)
    elif opcode.name in _INT_OPS:
        stack.append(arg)
    elif opcode.name == "MARK":
        stack.append(_MARK)
    else:
        stack.extend(None for _ in opcode.stack_after)
