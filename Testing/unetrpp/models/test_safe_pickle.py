"""The plain-data unpickler: numpy values and containers load; every other global is refused unrun."""

from __future__ import annotations

import collections
import pickle
from pathlib import Path

import numpy as np
import pytest
from unetrpp.errors import CheckpointError, UnsafeCheckpointError
from unetrpp.models.safe_pickle import load_plain_pickle, torch_numpy_allowlist


@pytest.mark.parametrize("protocol", [2, 4, 5], ids=["protocol2", "protocol4", "protocol5"])
def test_plain_data_with_numpy_values_round_trips(tmp_path: Path, protocol: int) -> None:
    arrays = {char: np.arange(6).astype(char).reshape(2, 3) for char in "?bBhHiIlLqQefdFD"}
    data = collections.OrderedDict(
        arrays=arrays,
        strings=np.array(["CT", "MRI"]),
        scalars=[np.float64(1.5), np.float32(2.5), np.int64(3), np.bool_(True)],
        dtypes=[np.dtype("float32"), np.dtype("<i8")],
        zero_d=np.array(4.0),
        containers=(
            {1, 2},
            frozenset({3}),
            complex(1, 2),
            b"raw",
            bytearray(b"xy"),
            collections.defaultdict(list, a=[1]),
        ),
    )
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))

    loaded = load_plain_pickle(path)

    assert isinstance(loaded, collections.OrderedDict)
    for char, array in arrays.items():
        assert loaded["arrays"][char].dtype == array.dtype and np.array_equal(loaded["arrays"][char], array)
    assert loaded["scalars"] == data["scalars"] and type(loaded["scalars"][1]) is np.float32
    assert loaded["dtypes"] == data["dtypes"] and loaded["containers"] == data["containers"]
    assert loaded["strings"].tolist() == ["CT", "MRI"] and loaded["zero_d"] == 4.0


class _Reduces:
    def __init__(self, target, *args) -> None:
        self.target, self.args = target, args

    def __reduce__(self):
        return (self.target, self.args)


@pytest.mark.parametrize(
    ("payload", "name"),
    [
        pytest.param(_Reduces(eval, "1+1"), "builtins.eval", id="eval"),
        pytest.param(_Reduces(getattr, np.ndarray, "tofile"), "builtins.getattr", id="getattr"),
        pytest.param(_Reduces(np.load, "x.npy"), "numpy.load", id="numpy.load"),
        pytest.param(_Reduces(collections.Counter, "ab"), "collections.Counter", id="counter"),
        pytest.param(_Reduces(Path, "x"), "pathlib", id="pathlib"),
    ],
)
def test_any_other_global_is_refused_with_its_name(tmp_path: Path, payload: object, name: str) -> None:
    path = tmp_path / "bad.pkl"
    path.write_bytes(pickle.dumps({"plans": [payload]}, protocol=4))

    with pytest.raises(UnsafeCheckpointError, match=f"asks to run '{name}"):
        load_plain_pickle(path)


def test_torch_allow_list_holds_only_numpy_reconstruction_under_both_spellings() -> None:
    names = {name for _, name in torch_numpy_allowlist()}
    assert {"numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar"} <= names
    assert {"numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct"} <= names
    assert {"numpy.dtype", "numpy.ndarray", "numpy.dtypes.Float64DType"} <= names
    assert all(name.startswith("numpy.") for name in names)
    assert not any("Object" in name or "Void" in name for name in names)


_BYTES_BOMB = b"\x80\x02cbuiltins\nbytes\n\x8a\x05\x00\x28\x6b\xee\x00\x85R."  # bytes(4_000_000_000), F-13
_HUGE = 10**12


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(_BYTES_BOMB, id="bytes(4e9)-from-the-review"),
        pytest.param(pickle.dumps(_Reduces(bytearray, _HUGE), protocol=2), id="bytearray(N)"),
        pytest.param(pickle.dumps(_Reduces(list, range(_HUGE)), protocol=2), id="list(range(N))"),
        pytest.param(pickle.dumps(_Reduces(frozenset, range(_HUGE)), protocol=4), id="frozenset(range(N))"),
        pytest.param(
            pickle.dumps([_Reduces(bytes, 200_000_000), _Reduces(bytes, 200_000_000)], protocol=2),
            id="two-halves-of-the-budget",
        ),
        pytest.param(
            pickle.dumps(_Reduces(np._core.multiarray._reconstruct, np.ndarray, (_HUGE,), b"b"), protocol=2),
            id="ndarray-of-N-bytes",
        ),
    ],
)
def test_memory_bombs_are_refused_before_allocating(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "model_final_checkpoint.model.pkl"
    path.write_bytes(payload)
    with pytest.raises(
        UnsafeCheckpointError, match=r"more than 256 MB of memory .*nothing was run"
    ) as refused:
        load_plain_pickle(path)
    assert "\n" not in str(refused.value)


def test_numpy_ndarray_itself_cannot_be_called(tmp_path: Path) -> None:
    path = tmp_path / "plans.pkl"
    path.write_bytes(pickle.dumps(_Reduces(np.ndarray, (_HUGE,)), protocol=2))
    with pytest.raises(CheckpointError, match="not a readable plans pickle"):
        load_plain_pickle(path)


def test_plain_data_of_a_few_megabytes_still_loads(tmp_path: Path) -> None:
    data = {"raw": bytes(5_000_000), "items": list(range(100_000)), "array": np.zeros((100, 1000))}
    path = tmp_path / "plans.pkl"
    path.write_bytes(pickle.dumps(data, protocol=2))
    loaded = load_plain_pickle(path)
    assert (
        loaded["raw"] == data["raw"]
        and loaded["items"] == data["items"]
        and loaded["array"].shape == (100, 1000)
    )


def test_an_oversized_pickle_file_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "plans.pkl"
    with path.open("wb") as stream:
        stream.truncate(65 << 20)  # sparse: 65 MB without writing them
    with pytest.raises(CheckpointError, match="65 MB; a plans pickle has a few kilobytes"):
        load_plain_pickle(path)
