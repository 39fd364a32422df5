"""rung.pipeline.artifacts: codecs, content addressing and refusal of changed files."""

from __future__ import annotations

import hashlib
import json
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


# -- with a remote (a shared folder here; tests/integration/test_artifacts_remote.py: S3) ------------


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    return tmp_path / "shared"


def host(tmp_path: Path, remote: Path, name: str) -> ArtifactStore:
    """One host's store: its own cache, the shared remote."""
    return ArtifactStore(tmp_path / name / "artifacts", str(remote))


def remote_file(remote: Path, ref: str) -> Path:
    return remote / ref[:2] / ref


def test_put_writes_the_cache_and_the_remote(tmp_path: Path, remote: Path) -> None:
    store = host(tmp_path, remote, "a")
    ref = store.put(frame())
    assert store.path(ref).is_file()
    assert remote_file(remote, ref).read_bytes() == store.path(ref).read_bytes()
    assert not [p for p in remote.rglob("*") if p.name.startswith(".")]  # no temporary file left


def test_a_second_host_with_an_empty_cache_gets_from_the_remote_and_caches_it(tmp_path: Path, remote: Path) -> None:
    ref = host(tmp_path, remote, "a").put(frame())
    other = host(tmp_path, remote, "b")
    assert not other.root.exists()
    assert other.exists(ref)
    pd.testing.assert_frame_equal(other.get(ref), frame())
    assert other.path(ref).read_bytes() == remote_file(remote, ref).read_bytes()  # cached: the next get is local
    remote_file(remote, ref).unlink()
    pd.testing.assert_frame_equal(other.get(ref), frame())


def test_path_fetches_first(tmp_path: Path, remote: Path) -> None:
    ref = host(tmp_path, remote, "a").put({"rows": 3})
    path = host(tmp_path, remote, "b").path(ref)
    assert path == tmp_path / "b" / "artifacts" / ref[:2] / ref and json.loads(path.read_bytes()) == {"rows": 3}


def test_an_object_in_the_cache_only_is_uploaded_when_put_again(tmp_path: Path, remote: Path) -> None:
    ref = ArtifactStore(tmp_path / "a" / "artifacts").put([1, 2])  # written before artifacts.uri was set
    assert not remote_file(remote, ref).exists()
    assert host(tmp_path, remote, "a").put([1, 2]) == ref
    assert remote_file(remote, ref).is_file()


def test_an_object_in_the_remote_is_not_written_again(tmp_path: Path, remote: Path) -> None:
    ref = host(tmp_path, remote, "a").put({"a": 1})
    mtime = remote_file(remote, ref).stat().st_mtime_ns
    assert host(tmp_path, remote, "b").put({"a": 1}) == ref
    assert remote_file(remote, ref).stat().st_mtime_ns == mtime


def test_a_tampered_remote_object_is_refused_and_never_cached(tmp_path: Path, remote: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    ref = host(tmp_path, remote, "a").put(Blob(1))
    remote_file(remote, ref).write_bytes(pickle.dumps(Bomb()))
    loaded: list[bytes] = []
    monkeypatch.setattr(pickle, "loads", lambda data, *a, **k: loaded.append(data))
    other = host(tmp_path, remote, "b")
    for fetch in (other.get, other.path):
        with pytest.raises(ArtifactCorrupted, match=f"in {remote} does not match its sha256"):
            fetch(ref)
    assert loaded == [] and not (other.root / ref[:2] / ref).exists()


def test_an_object_nowhere_names_both_places(tmp_path: Path, remote: Path) -> None:
    store = host(tmp_path, remote, "a")
    missing = "ab" * 32 + ".json"
    assert not store.exists(missing)
    with pytest.raises(ArtifactCorrupted, match=f"missing from {store.root} and from {remote}"):
        store.get(missing)


def test_without_a_remote_a_missing_object_names_the_setting(store: ArtifactStore) -> None:
    with pytest.raises(ArtifactCorrupted, match="set artifacts.uri"):
        store.get("cd" * 32 + ".json")


def test_a_reference_that_is_not_one_is_refused(store: ArtifactStore) -> None:
    assert not store.exists("") and not store.exists("../../etc/passwd")
    with pytest.raises(ArtifactCorrupted, match="not an artifact reference"):
        store.get("../../etc/passwd.json")


def test_the_store_pickles_with_its_root_and_uri_only(tmp_path: Path, remote: Path) -> None:
    store = host(tmp_path, remote, "a")
    ref = store.put({"a": 1})  # the remote is open now
    copy = pickle.loads(pickle.dumps(store))
    assert (copy.root, copy.uri) == (store.root, str(remote))
    assert copy.get(ref) == {"a": 1}


def test_an_unwritable_cache_is_skipped_when_the_remote_holds_the_objects(tmp_path: Path, remote: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")
    store = ArtifactStore(blocked / "artifacts", str(remote))  # a Ray node without the driver's folder
    ref = store.put({"a": 1})
    assert remote_file(remote, ref).is_file() and store.get(ref) == {"a": 1}
    with pytest.raises(OSError):
        ArtifactStore(blocked / "artifacts").put({"a": 1})  # without a remote the cache is the store: its error stands


# -- the setting ------------------------------------------------------------------------------


def _project(tmp_path: Path, extra: str = "") -> Path:
    (tmp_path / "rung.yaml").write_text("name: p\n" + extra)
    return tmp_path


def test_artifacts_uri_from_the_file_and_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rung.config import load_settings
    from rung.project import Project

    root = _project(tmp_path)
    monkeypatch.delenv("RUNG_ARTIFACTS_URI", raising=False)
    assert load_settings(root).artifacts.uri is None
    assert Project(root, load_settings(root)).artifacts.uri is None  # the default: .rung/artifacts only
    _project(tmp_path, "artifacts:\n  uri: ../shared/artifacts\n")
    project = Project(root, load_settings(root))
    assert project.artifacts.uri == str((tmp_path.parent / "shared" / "artifacts").resolve())  # a folder: from the project
    assert project.artifacts.root == root.resolve() / ".rung" / "artifacts"
    monkeypatch.setenv("RUNG_ARTIFACTS_URI", "s3://bucket/prefix")
    assert Project(root, load_settings(root)).artifacts.uri == "s3://bucket/prefix"  # the environment wins
    monkeypatch.setenv("RUNG_ARTIFACTS_URI", ".rung/artifacts")
    assert Project(root, load_settings(root)).artifacts.uri is None  # the cache itself is no remote


def test_an_artifacts_uri_rung_cannot_open_is_one_line_naming_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rung.config import load_settings
    from rung.errors import ConfigError

    monkeypatch.delenv("RUNG_ARTIFACTS_URI", raising=False)
    root = _project(tmp_path, "artifacts:\n  uri: http://example.com/artifacts\n")
    with pytest.raises(ConfigError, match=r"^rung.yaml: artifacts.uri: .*use a folder, s3://, gs:// or abfs://"):
        load_settings(root)
    _project(tmp_path, "artifacts:\n  url: s3://b/a\n")
    with pytest.raises(ConfigError, match=r"artifacts.url: unknown key"):
        load_settings(root)
