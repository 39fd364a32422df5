"""Content-addressed storage for step outputs.

An output is serialised with a codec chosen by its type (Parquet for data
frames, ``.npy`` for arrays, JSON for plain data, pickle for the rest) and
stored under the sha256 of those bytes; the reference is ``<sha256>.<codec>``.
Equal content gets the same reference, which is what makes the step cache
content-addressed. Writes are atomic (temp file + rename), so concurrent runs
writing the same object are safe. A pickled object is only loaded after its
bytes hash to the name it was stored under, so a file changed on disk is
refused rather than executed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

from rung.errors import ArtifactCorrupted

__all__ = ["ArtifactStore", "encode", "decode"]


def _is_plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, list):  # a tuple would come back as a list: pickle keeps it a tuple
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def encode(value: Any) -> tuple[bytes, str]:
    """Serialise ``value``; returns the bytes and the codec name."""
    module = type(value).__module__
    if module.startswith("pandas") and type(value).__name__ == "DataFrame":
        buffer = io.BytesIO()
        value.to_parquet(buffer, index=True)
        return buffer.getvalue(), "parquet"
    if module == "numpy" and type(value).__name__ == "ndarray" and value.dtype != object:
        import numpy as np

        buffer = io.BytesIO()
        np.save(buffer, value, allow_pickle=False)
        return buffer.getvalue(), "npy"
    if _is_plain(value):
        return json.dumps(value, sort_keys=True, allow_nan=True).encode(), "json"
    return pickle.dumps(value, protocol=5), "pickle"


def decode(data: bytes, codec: str) -> Any:
    if codec == "parquet":
        import pandas as pd

        return pd.read_parquet(io.BytesIO(data))
    if codec == "npy":
        import numpy as np

        return np.load(io.BytesIO(data), allow_pickle=False)
    if codec == "json":
        return json.loads(data)
    if codec == "pickle":
        return pickle.loads(data)  # only reached after the sha256 check in ArtifactStore.get
    raise ValueError(f"unknown codec {codec!r}")


class ArtifactStore:
    """Objects under ``root/ab/<sha256>.<codec>``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, ref: str) -> Path:
        return self.root / ref[:2] / ref

    def exists(self, ref: str) -> bool:
        return self.path(ref).is_file()

    def put(self, value: Any) -> str:
        data, codec = encode(value)
        return self.put_bytes(data, codec)

    def put_bytes(self, data: bytes, codec: str) -> str:
        ref = f"{hashlib.sha256(data).hexdigest()}.{codec}"
        target = self.path(ref)
        if target.is_file():
            return ref
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return ref

    def get(self, ref: str) -> Any:
        digest, _, codec = ref.partition(".")
        try:
            data = self.path(ref).read_bytes()
        except FileNotFoundError:
            raise ArtifactCorrupted(f"artifact {ref} is missing from {self.root}; re-run without the cache") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise ArtifactCorrupted(f"artifact {ref} does not match its sha256; it was changed on disk, refusing to load it")
        return decode(data, codec)
