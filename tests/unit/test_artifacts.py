"""rung.pipeline.artifacts: codecs, content addressing and refusal of changed files."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rung.errors import ArtifactCorrupted, RungError
from rung.pipeline.artifacts import ArtifactStore, decode, encode


class Blob:
    """An arbitrary object: stored with pickle."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Blob) and other.value == self.value


class Bomb:
    """Pickles into an object whose loading would run code: must never be loaded from a changed file."""

    def __reduce__(self):
        return (os.system, ("true",))


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {"x": [1, 2, 3], "y": [0.5, np.nan, 2.5], "c": ["a", "b", None]},
        index=pd.Index([10, 20, 30], name="row"),
    )


# -- encode / decode --------------------------------------------------------------------------


def test_dataframe_uses_parquet_and_round_trips() -> None:
    data, codec = encode(frame())
    assert codec == "parquet"
    assert data[:4] == b"PAR1"
    pd.testing.assert_frame_equal(decode(data, codec), frame())


def test_array_uses_npy_and_round_trips() -> None:
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    data, codec = encode(array)
    assert codec == "npy"
    back = decode(data, codec)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, array)


def test_object_array_falls_back_to_pickle() -> None:
    array = np.array([{"a": 1}, None], dtype=object)
    data, codec = encode(array)
    assert codec == "pickle"
    assert decode(data, codec).tolist() == array.tolist()


@pytest.mark.parametrize(
    "value",
    [{"b": 1, "a": [1.5, "x", None, True]}, [1, 2, {"k": "v"}], "text", 3, 2.5, None, True],
)
def test_plain_data_uses_json_and_round_trips(value) -> None:
    data, codec = encode(value)
    assert codec == "json"
    assert decode(data, codec) == value


def test_json_is_canonical() -> None:
    assert encode({"b": 1, "a": 2}) == encode({"a": 2, "b": 1})


def test_nan_in_plain_data_round_trips() -> None:
    data, codec = encode({"auc": float("nan")})
    assert codec == "json"
    assert np.isnan(decode(data, codec)["auc"])


@pytest.mark.parametrize("value", [Blob(3), (1, 2), {1: "int key"}, {"s": {1, 2}}, [1, Blob(2)]])
def test_everything_else_uses_pickle(value) -> None:
    data, codec = encode(value)
    assert codec == "pickle"
    assert decode(data, codec) == value


@pytest.mark.parametrize("value", [{"shape": (3, 4)}, [(1, 2)]])
def test_nested_tuples_round_trip_unchanged(value) -> None:
    data, codec = encode(value)
    back = decode(data, codec)
    assert back == value


def test_unknown_codec() -> None:
    with pytest.raises(ValueError, match="unknown codec"):
        decode(b"", "xml")


# -- the store --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [frame(), np.arange(5), {"a": [1, 2]}, ["x"], Blob(7)],
    ids=["dataframe", "ndarray", "dict", "list", "object"],
)
def test_store_round_trip(store: ArtifactStore, value) -> None:
    ref = store.put(value)
    digest, _, codec = ref.partition(".")
    assert codec == encode(value)[1]
    assert store.exists(ref)
    path = store.path(ref)
    assert path == store.root / digest[:2] / ref
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    back = store.get(ref)
    if isinstance(value, pd.DataFrame):
        pd.testing.assert_frame_equal(back, value)
    elif isinstance(value, np.ndarray):
        np.testing.assert_array_equal(back, value)
    else:
        assert back == value


def test_same_content_same_ref(store: ArtifactStore) -> None:
    assert store.put(frame()) == store.put(frame().copy())
    assert store.put({"a": 1, "b": 2}) == store.put({"b": 2, "a": 1})
    assert store.put(np.arange(3)) == store.put(np.arange(3))
    files = [p for p in store.root.rglob("*") if p.is_file()]
    assert len(files) == 3, files


def test_different_content_different_ref(store: ArtifactStore) -> None:
    assert store.put({"a": 1}) != store.put({"a": 2})
    assert store.put(np.arange(3)) != store.put(np.arange(4))


def test_put_leaves_no_temporary_files(store: ArtifactStore) -> None:
    store.put(frame())
    store.put(Blob(1))
    assert not [p for p in store.root.rglob(".tmp-*")]


def test_tampered_json_is_refused(store: ArtifactStore) -> None:
    ref = store.put({"auc": 0.9})
    store.path(ref).write_bytes(b'{"auc": 1.0}')
    with pytest.raises(ArtifactCorrupted, match="does not match its sha256"):
        store.get(ref)


def test_tampered_pickle_is_refused_without_loading(store: ArtifactStore, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = store.put(Blob(1))
    store.path(ref).write_bytes(pickle.dumps(Bomb()))
    loaded: list[bytes] = []

    def spy(data, *args, **kwargs):
        loaded.append(data)
        raise AssertionError("pickle.loads must not be reached for a changed file")

    monkeypatch.setattr(pickle, "loads", spy)
    with pytest.raises(ArtifactCorrupted):
        store.get(ref)
    assert loaded == []


def test_intact_pickle_is_loaded(store: ArtifactStore) -> None:
    ref = store.put(Blob(42))
    assert store.get(ref) == Blob(42)


def test_missing_file(store: ArtifactStore) -> None:
    ref = store.put([1, 2, 3])
    store.path(ref).unlink()
    assert not store.exists(ref)
    with pytest.raises(ArtifactCorrupted, match="missing"):
        store.get(ref)


def test_never_stored_ref(store: ArtifactStore) -> None:
    with pytest.raises(ArtifactCorrupted):
        store.get("0" * 64 + ".json")


def test_artifact_corrupted_is_a_rung_error() -> None:
    assert issubclass(ArtifactCorrupted, RungError)


def test_put_bytes_is_idempotent(store: ArtifactStore) -> None:
    ref = store.put_bytes(b"[1]", "json")
    mtime = store.path(ref).stat().st_mtime_ns
    assert store.put_bytes(b"[1]", "json") == ref
    assert store.path(ref).stat().st_mtime_ns == mtime
    assert store.get(ref) == [1]
