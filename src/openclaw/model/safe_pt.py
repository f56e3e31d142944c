"""Read a PyTorch ``.pt`` state_dict without torch and without running code from the file.

A ``torch.save`` file is a zip: ``<name>/data.pkl`` (a pickle of the structure) and
``<name>/data/<key>`` (the raw bytes of each storage). A pickle is a program: loading one with
``pickle.load`` runs whatever callable it names (``os.system``, ``builtins.exec``). So the
structure is read by an unpickler whose ``find_class`` answers only the few names a
state_dict of tensors needs, each mapped to a function of ours that builds NumPy arrays, and
refuses every other name before anything is called:

``collections.OrderedDict``            the state_dict itself
``torch._utils._rebuild_tensor_v2``    a tensor: a strided view of a storage (v1 as well)
``torch._utils._rebuild_parameter``    an ``nn.Parameter`` around a tensor (kept as the tensor)
``torch.<Type>Storage``                a storage's element type (FloatStorage -> float32, ...)

Storages come through ``persistent_load`` as ``("storage", type, key, location, numel)`` and
are read from the zip by us. Legacy (pre-1.6, non-zip) files are refused: their format starts
with pickles of their own and offers nothing to check. Everything these functions build is an
object of ours without a ``__dict__`` and with ``__setstate__`` refusing, so the pickle's
BUILD opcode cannot change it either.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, NoReturn

import numpy as np
import numpy.typing as npt

from openclaw.errors import ArtifactError

#: torch storage type names and the NumPy dtype of their elements. BFloat16 has no NumPy
#: dtype: its 16 bits are the top half of a float32, widened on read.
STORAGE_DTYPES: Final[Mapping[str, str]] = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
}
#: Largest file read (zip members added up): a state_dict of a small network is kilobytes;
#: a zip bomb or a multi-gigabyte checkpoint is not what this reader is for.
MAX_BYTES: Final = 1 << 30
#: Largest data.pkl: the structure of thousands of tensors fits in far less.
MAX_PICKLE_BYTES: Final = 16 << 20
#: Most elements of one tensor (a zero stride could otherwise ask for any size).
MAX_ELEMENTS: Final = 1 << 28


def _refuse(*_args: object) -> NoReturn:
    raise pickle.UnpicklingError("this object cannot be modified")


class _Sealed:
    """Objects handed to the pickle: no ``__dict__``, no attribute writes, no ``__setstate__``
    (the BUILD opcode would otherwise let a file rewrite them)."""

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        _refuse()

    def __setstate__(self, state: object) -> None:
        _refuse()


class _StorageType(_Sealed):
    __slots__ = ("dtype_name", "type_name")

    dtype_name: str
    type_name: str

    def __init__(self, type_name: str, dtype_name: str) -> None:
        object.__setattr__(self, "type_name", type_name)
        object.__setattr__(self, "dtype_name", dtype_name)


class _Storage(_Sealed):
    __slots__ = ("data",)

    data: npt.NDArray[Any]

    def __init__(self, data: npt.NDArray[Any]) -> None:
        object.__setattr__(self, "data", data)


class _Tensor(_Sealed):
    __slots__ = ("array",)

    array: npt.NDArray[Any]

    def __init__(self, array: npt.NDArray[Any]) -> None:
        object.__setattr__(self, "array", array)


def _int_tuple(value: object, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise pickle.UnpicklingError(f"{what} is not a tuple of integers: {value!r}")
    return value


class _RestrictedUnpickler(pickle.Unpickler):
    """The unpickler of one file; see the module docstring for what it answers."""

    def __init__(self, data: bytes, *, storage_reader: Callable[[str], bytes], big_endian: bool):
        super().__init__(io.BytesIO(data))
        self._read_storage = storage_reader
        self._big_endian = big_endian
        self._storages: dict[str, _Storage] = {}
        # Fresh markers per file: nothing one file does to them reaches another.
        self._types = {name: _StorageType(name, dtype) for name, dtype in STORAGE_DTYPES.items()}

    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return self._rebuild_tensor
        if module == "torch._utils" and name in (
            "_rebuild_parameter",
            "_rebuild_parameter_with_state",
        ):
            return self._rebuild_parameter
        if module == "torch" and name in self._types:
            return self._types[name]
        raise ArtifactError(
            f"refused global {module}.{name}: a state_dict of tensors never needs it, so the "
            "file was not loaded and nothing in it ran",
            reason="unsafe",
        )

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"storage of unknown type {storage_type!r}")
        if not isinstance(key, str) or not key.isdigit():
            raise pickle.UnpicklingError(f"bad storage key {key!r}")
        if not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
            raise pickle.UnpicklingError(f"bad storage size {numel!r}")
        cached = self._storages.get(key)
        if cached is not None:
            return cached
        raw = self._read_storage(key)
        if storage_type.dtype_name == "bfloat16":
            bits = np.frombuffer(raw, dtype=">u2" if self._big_endian else "<u2")
            array: npt.NDArray[Any] = (bits.astype(np.uint32) << 16).view(np.float32)
        else:
            dtype = np.dtype(storage_type.dtype_name)
            dtype = dtype.newbyteorder(">" if self._big_endian else "<")
            if len(raw) % dtype.itemsize:
                raise pickle.UnpicklingError(f"storage {key} is not a whole number of elements")
            array = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))
        if array.size < numel:
            raise pickle.UnpicklingError(
                f"storage {key} holds {array.size} elements, the pickle says {numel}"
            )
        storage = _Storage(array)
        self._storages[key] = storage
        return storage

    def _rebuild_tensor(
        self,
        storage: object,
        storage_offset: object,
        size: object,
        stride: object,
        *_rest: object,
    ) -> _Tensor:
        # _rest: requires_grad, backward_hooks, metadata: autograd state a state_dict drops.
        if not isinstance(storage, _Storage):
            raise pickle.UnpicklingError("a tensor without a storage")
        if not isinstance(storage_offset, int) or isinstance(storage_offset, bool):
            raise pickle.UnpicklingError(f"bad storage offset {storage_offset!r}")
        shape = _int_tuple(size, "tensor size")
        strides = _int_tuple(stride, "tensor stride")
        if len(shape) != len(strides) or any(s < 0 for s in shape + strides):
            raise pickle.UnpicklingError(f"bad tensor size {shape} / stride {strides}")
        data = storage.data
        if storage_offset < 0 or storage_offset > data.size:
            raise pickle.UnpicklingError(f"storage offset {storage_offset} outside the storage")
        count = 1
        for n in shape:
            count *= n
        if count > MAX_ELEMENTS:
            raise pickle.UnpicklingError(f"tensor of size {shape} is too large")
        if count == 0:
            return _Tensor(np.zeros(shape, dtype=data.dtype))
        last = storage_offset + sum((n - 1) * s for n, s in zip(shape, strides, strict=True))
        if last >= data.size:
            raise pickle.UnpicklingError(
                f"tensor of size {shape} stride {strides} at offset {storage_offset} reads "
                f"past its storage of {data.size} elements"
            )
        item = data.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[storage_offset:],
            shape=shape,
            strides=tuple(s * item for s in strides),
            writeable=False,
        )
        return _Tensor(np.array(view, copy=True))

    def _rebuild_parameter(self, data: object, *_rest: object) -> _Tensor:
        if not isinstance(data, _Tensor):
            raise pickle.UnpicklingError("a parameter around something that is not a tensor")
        return data


def _is_legacy_pickle(head: bytes) -> bool:
    return head[:1] == b"\x80"


def load_state_dict(path: Path, *, max_bytes: int = MAX_BYTES) -> dict[str, npt.NDArray[Any]]:
    """The tensors of a ``torch.save``-d state_dict (a flat mapping of names to tensors), as
    NumPy arrays. Raises :class:`ArtifactError` (reason ``unsafe`` for a refused global or a
    legacy pickle, ``missing`` for a file that cannot be read, ``invalid`` for anything else
    that is not such a file)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ArtifactError(f"{path}: no such file", reason="missing") from exc
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot be read: {exc}", reason="missing") from exc
    return parse_state_dict(data, source=str(path), max_bytes=max_bytes)


def parse_state_dict(
    data: bytes, *, source: str, max_bytes: int = MAX_BYTES
) -> dict[str, npt.NDArray[Any]]:
    """:func:`load_state_dict` on the file's bytes (so what was checksummed is what is read)."""
    if data[:2] != b"PK":
        if _is_legacy_pickle(data):
            raise ArtifactError(
                f"{source}: a legacy (non-zip) torch file, i.e. a bare pickle: refused, since "
                "loading one runs code; re-save it with torch >= 1.6 (the zip format)",
                reason="unsafe",
            )
        raise ArtifactError(f"{source}: not a torch zip file (a .pt saved by torch.save)")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return _load_zip(archive, max_bytes=max_bytes)
    except ArtifactError as exc:
        raise ArtifactError(f"{source}: {exc}", reason=exc.reason) from None
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise ArtifactError(f"{source}: not a plain state_dict of tensors: {exc}") from exc
    except Exception as exc:  # a hostile pickle can raise anything: refuse it, whatever it is
        raise ArtifactError(f"{source}: not a plain state_dict of tensors: {exc!r}") from exc


def _load_zip(archive: zipfile.ZipFile, *, max_bytes: int) -> dict[str, npt.NDArray[Any]]:
    infos = archive.infolist()
    total = sum(info.file_size for info in infos)
    if total > max_bytes:
        raise ArtifactError(f"unpacks to {total} bytes, more than the {max_bytes} allowed")
    pickles = [
        info.filename
        for info in infos
        if info.filename.rpartition("/")[2] == "data.pkl" and info.filename.count("/") <= 1
    ]
    if len(pickles) != 1:
        raise ArtifactError(
            f"expected one <name>/data.pkl in the zip, found {len(pickles)}: not a torch.save file"
        )
    prefix = pickles[0][: -len("data.pkl")]
    names = set(archive.namelist())
    big_endian = False
    if prefix + "byteorder" in names:
        order = archive.read(prefix + "byteorder").decode("ascii", "replace").strip()
        if order not in ("little", "big"):
            raise ArtifactError(f"unknown byte order {order!r}")
        big_endian = order == "big"
    data = archive.read(pickles[0])
    if len(data) > MAX_PICKLE_BYTES:
        raise ArtifactError(f"data.pkl of {len(data)} bytes is too large for a state_dict")

    def read_storage(key: str) -> bytes:
        member = f"{prefix}data/{key}"
        if member not in names:
            raise pickle.UnpicklingError(f"storage {key} is missing from the zip ({member})")
        return archive.read(member)

    result = _RestrictedUnpickler(data, storage_reader=read_storage, big_endian=big_endian).load()
    if not isinstance(result, dict):
        raise ArtifactError(
            f"holds a {type(result).__name__}, not a state_dict (a mapping of names to tensors)"
        )
    out: dict[str, npt.NDArray[Any]] = {}
    for key, value in result.items():
        if not isinstance(key, str):
            raise ArtifactError(f"state_dict key {key!r} is not a string")
        if not isinstance(value, _Tensor):
            raise ArtifactError(
                f"state_dict entry {key!r} is a {type(value).__name__}, not a tensor (a "
                "checkpoint with optimizer state or nested dicts is not a plain state_dict)"
            )
        out[key] = value.array
    return out
