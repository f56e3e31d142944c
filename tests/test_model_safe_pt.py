"""``.pt`` files read without torch and without running their pickle: real torch files are
read exactly; malicious ones are refused, and their payload provably never runs."""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from openclaw.errors import ArtifactError
from openclaw.inference import predict_bucket_params
from openclaw.model.safe_pt import load_state_dict


class _Exec:
    """Pickles as ``builtins.exec(code)``: unpickling runs ``code``."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, (self.code,))


class _System:
    """Pickles as ``os.system(command)`` (``posix.system`` on Linux)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, (self.command,))


def _writes(marker: Path) -> str:
    return f"import pathlib; pathlib.Path({str(marker)!r}).write_text('pwned')"


def _with_pickle(real: Path, out: Path, payload: bytes) -> None:
    """A copy of the real torch zip ``real`` whose data.pkl is ``payload``."""
    with zipfile.ZipFile(real) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = payload if info.filename.endswith("/data.pkl") else src.read(info)
            dst.writestr(info, data)


def _real_pt(tmp_path: Path) -> Path:
    path = tmp_path / "real.pt"
    torch.manual_seed(0)
    torch.save(torch.nn.Linear(10, 2).state_dict(), path)
    return path


def test_a_torch_state_dict_reads_exactly(tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = torch.nn.Sequential(
        torch.nn.Linear(7, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3), torch.nn.BatchNorm1d(3)
    )
    path = tmp_path / "net.pt"
    torch.save(net.state_dict(), path)
    got = load_state_dict(path)
    expected = net.state_dict()
    assert list(got) == list(expected)  # order kept
    for key, tensor in expected.items():
        np.testing.assert_array_equal(got[key], tensor.numpy())
        assert got[key].dtype == tensor.numpy().dtype
    assert got["3.num_batches_tracked"].dtype == np.int64


def test_dtypes_views_and_shared_storages(tmp_path: Path) -> None:
    base = torch.arange(24, dtype=torch.float64).reshape(4, 6)
    state = collections.OrderedDict(
        f64=base,
        transposed=base.t(),  # a strided view of the same storage
        column=base[:, 2],  # an offset, strided view
        f16=torch.linspace(-2, 2, 9, dtype=torch.float16),
        bf16=torch.tensor([1.5, -3.25, 1e10], dtype=torch.bfloat16),
        i32=torch.tensor([[1, -2], [3, 4]], dtype=torch.int32),
        u8=torch.tensor([0, 255], dtype=torch.uint8),
        flag=torch.tensor([True, False]),
        scalar=torch.tensor(3.5),
        empty=torch.zeros(0, 4),
        param=torch.nn.Parameter(torch.ones(2, 2)),
    )
    path = tmp_path / "mixed.pt"
    torch.save(state, path)
    got = load_state_dict(path)
    for key, tensor in state.items():
        expected = tensor.detach().float() if tensor.dtype == torch.bfloat16 else tensor.detach()
        np.testing.assert_array_equal(got[key], expected.numpy(), err_msg=key)
        assert got[key].shape == tuple(tensor.shape)
    assert got["bf16"].dtype == np.float32
    assert got["column"].tolist() == [2.0, 8.0, 14.0, 20.0]


@pytest.mark.parametrize("builder", ["exec", "system"])
def test_a_malicious_pickle_inside_a_real_torch_zip_is_refused_and_never_runs(
    tmp_path: Path, builder: str
) -> None:
    marker = tmp_path / "pwned"
    payload_object = _Exec(_writes(marker)) if builder == "exec" else _System(f"touch {marker}")
    # The payload hides among real tensors, as a tampered checkpoint would.
    state = collections.OrderedDict(weight=payload_object)
    payload = pickle.dumps(state, protocol=2)
    path = tmp_path / "evil.pt"
    _with_pickle(_real_pt(tmp_path), path, payload)

    with pytest.raises(ArtifactError) as info:
        load_state_dict(path)
    assert info.value.reason == "unsafe"
    # Protocol 2 (torch's) names builtins as Python 2 did.
    refused = "__builtin__.exec" if builder == "exec" else "posix.system"
    assert f"refused global {refused}" in str(info.value)
    assert str(path) in str(info.value)
    with pytest.raises(ArtifactError, match="refused global"):
        predict_bucket_params(path, [0.0] * 10)
    assert not marker.exists()

    # The control: the same bytes do run their payload when unpickled the ordinary way.
    pickle.loads(payload)  # proving the payload is live
    assert marker.exists()


def test_a_whole_module_saved_with_torch_save_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(10, 2), path)
    with pytest.raises(ArtifactError, match=r"refused global torch\.nn\.modules\.linear\.Linear"):
        load_state_dict(path)


def test_a_legacy_pickle_file_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    legacy = tmp_path / "legacy.pt"
    torch.save(torch.nn.Linear(10, 2).state_dict(), legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(ArtifactError, match="legacy") as info:
        load_state_dict(legacy)
    assert info.value.reason == "unsafe"

    bare = tmp_path / "bare.pt"
    bare.write_bytes(pickle.dumps(_Exec(_writes(marker)), protocol=2))
    with pytest.raises(ArtifactError, match="legacy"):
        predict_bucket_params(bare, [0.0] * 10)
    assert not marker.exists()


def test_the_pickle_cannot_rewrite_the_readers_own_objects(tmp_path: Path) -> None:
    """BUILD with a slot state would ``setattr`` on whatever find_class returned."""
    rewrite_defaults = (
        b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}X\x0c\x00\x00\x00__defaults__)s\x86b."
    )
    retype_storage = (
        b"\x80\x02ctorch\nFloatStorage\nN}X\x0a\x00\x00\x00dtype_nameX\x06\x00\x00\x00objects\x86b."
    )
    for i, payload in enumerate((rewrite_defaults, retype_storage)):
        path = tmp_path / f"build{i}.pt"
        _with_pickle(_real_pt(tmp_path), path, payload)
        with pytest.raises(ArtifactError, match="not a plain state_dict"):
            load_state_dict(path)
    # And a good file still reads as before.
    good = load_state_dict(_real_pt(tmp_path))
    assert good["weight"].shape == (2, 10)


def test_files_that_are_not_state_dicts_are_refused_clearly(tmp_path: Path) -> None:
    nested = tmp_path / "checkpoint.pt"
    torch.save({"model": torch.nn.Linear(2, 2).state_dict(), "epoch": 3}, nested)
    with pytest.raises(ArtifactError, match="'model' is a OrderedDict, not a tensor"):
        load_state_dict(nested)

    not_zip = tmp_path / "noise.pt"
    not_zip.write_bytes(b"hello world")
    with pytest.raises(ArtifactError, match="not a torch zip file"):
        load_state_dict(not_zip)

    two = tmp_path / "two.pt"
    with zipfile.ZipFile(two, "w") as z:
        z.writestr("a/data.pkl", pickle.dumps({}))
        z.writestr("b/data.pkl", pickle.dumps({}))
    with pytest.raises(ArtifactError, match="found 2"):
        load_state_dict(two)

    # A storage that is shorter than the tensor the pickle describes.
    buf = io.BytesIO()
    torch.save(collections.OrderedDict(w=torch.ones(4)), buf)
    short = tmp_path / "short.pt"
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src, zipfile.ZipFile(short, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, data[:4] if "/data/" in info.filename else data)
    with pytest.raises(ArtifactError, match="holds 1 elements, the pickle says 4"):
        load_state_dict(short)
