"""Content-addressed storage for step outputs.

An output is serialised with a codec chosen by its type (Parquet for data
frames, ``.npy`` for arrays, JSON for plain data, pickle for the rest) and
stored under the sha256 of those bytes; the reference is ``<sha256>.<codec>``.
Equal content gets the same reference, which is what makes the step cache
content-addressed. Writes are atomic (temp file + rename), so concurrent runs
writing the same object are safe. A pickled object is only loaded after its
bytes hash to the name it was stored under, so a file changed on disk is
refused rather than executed.

With a remote (``artifacts.uri``: an object store or a shared folder, opened
by :mod:`rung.objectstore`) the folder is this host's cache of it. ``put``
uploads what the remote lacks (the same name always holds the same bytes, so
an object there is never written again); ``get`` downloads what the cache
lacks and checks its sha256 before it is cached or decoded, so an object
changed in the remote is refused and never kept. That is how a second host
(a gateway replica, a Ray worker on another node) reads a version's data
snapshot and the pipeline cache's outputs without sharing a disk with the
host that wrote them.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rung.errors import ArtifactCorrupted, ArtifactUnavailable

if TYPE_CHECKING:
    from rung.objectstore import Location

__all__ = ["ArtifactStore", "encode", "decode"]

log = logging.getLogger(__name__)

REF = re.compile(r"^[0-9a-f]{64}\.[a-z0-9]+$")


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
    """Objects under ``root/ab/<sha256>.<codec>``; with ``uri``, also under ``uri/ab/<sha256>.<codec>``, ``root`` caching it.

    Picklable (steps on worker processes and Ray nodes get one): only
    ``root`` and ``uri`` travel, the connection to the remote is opened
    again where it is used. :class:`~rung.errors.ArtifactCorrupted` for an
    object that is nowhere or does not hash to its name,
    :class:`~rung.errors.ArtifactUnavailable` when the remote cannot be
    reached.
    """

    def __init__(self, root: Path, uri: str | None = None) -> None:
        self.root = Path(root)
        self.uri = uri or None
        self._remote: Location | None = None
        self._uploaded: set[str] = set()  # refs known to be in the remote: no second look

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root, "uri": self.uri}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.root, self.uri = state["root"], state["uri"]
        self._remote, self._uploaded = None, set()

    def __repr__(self) -> str:
        return f"ArtifactStore({str(self.root)!r}, uri={self._shown or None!r})"

    def path(self, ref: str) -> Path:
        """The object's file on this host, downloaded into the cache first if only the remote has it."""
        target = self._cached(ref)
        if self.uri is not None and not target.is_file():
            self._write_cache(ref, self._download(ref), required=True)
        return target

    def exists(self, ref: str) -> bool:
        """Whether the object can be had: in the cache, or in the remote."""
        if not REF.match(ref):
            return False
        if self._cached(ref).is_file():
            return True
        if self.uri is None:
            return False
        if ref in self._uploaded:
            return True
        return self._remote_has(ref)

    def put(self, value: Any) -> str:
        data, codec = encode(value)
        return self.put_bytes(data, codec)

    def put_bytes(self, data: bytes, codec: str) -> str:
        ref = f"{hashlib.sha256(data).hexdigest()}.{codec}"
        if not self._cached(ref).is_file():
            self._write_cache(ref, data, required=self.uri is None)
        if self.uri is not None and ref not in self._uploaded:
            if not self._remote_has(ref):
                try:
                    self._location().write_bytes(_key(ref), data)
                except OSError as exc:
                    raise self._unavailable(f"cannot upload artifact {ref}", exc) from exc
            self._uploaded.add(ref)
        return ref

    def get(self, ref: str) -> Any:
        """The object, decoded only once its bytes hash to its name (cache first, then the remote)."""
        return decode(self._read(ref), ref.partition(".")[2])

    # -- the cache and the remote -------------------------------------------------------------

    def _cached(self, ref: str) -> Path:
        return self.root / ref[:2] / ref

    def _read(self, ref: str) -> bytes:
        """The object's bytes, checked against its name: from the cache, else from the remote (then cached)."""
        if not REF.match(ref):
            raise ArtifactCorrupted(f"{ref!r} is not an artifact reference (<sha256>.<codec>)")
        try:
            data = self._cached(ref).read_bytes()
        except OSError as exc:
            if self.uri is None and not isinstance(exc, FileNotFoundError):
                raise
            if self.uri is None:
                raise ArtifactCorrupted(f"artifact {ref} is missing from {self.root}; re-run without the cache "
                                        "(or set artifacts.uri to the store the host that wrote it uses)") from None
            data = self._download(ref)
            self._write_cache(ref, data, required=False)
            return data
        if hashlib.sha256(data).hexdigest() != ref.partition(".")[0]:
            raise ArtifactCorrupted(f"artifact {ref} does not match its sha256; it was changed on disk, refusing to load it")
        return data

    def _download(self, ref: str) -> bytes:
        """The remote's bytes of ``ref``, refused unless they hash to its name."""
        try:
            data = self._location().read_bytes(_key(ref))
        except FileNotFoundError:
            raise ArtifactCorrupted(f"artifact {ref} is missing from {self.root} and from {self._shown}; "
                                    "re-run without the cache") from None
        except OSError as exc:
            raise self._unavailable(f"cannot download artifact {ref}", exc) from exc
        if hashlib.sha256(data).hexdigest() != ref.partition(".")[0]:
            raise ArtifactCorrupted(f"artifact {ref} in {self._shown} does not match its sha256; it was changed there, "
                                    "refusing it (not cached, not loaded)")
        self._uploaded.add(ref)
        return data

    def _remote_has(self, ref: str) -> bool:
        try:
            found = self._location().exists(_key(ref))
        except OSError as exc:
            raise self._unavailable(f"cannot look for artifact {ref}", exc) from exc
        if found:
            self._uploaded.add(ref)
        return found

    def _write_cache(self, ref: str, data: bytes, *, required: bool) -> None:
        """Keep ``data`` in the cache, atomically; one that cannot be written is skipped unless ``required``.

        With a remote, the cache only saves downloads: a Ray node that cannot
        create the driver's ``.rung/artifacts`` still reads and writes the remote.
        """
        target = self._cached(ref)
        tmp: str | None = None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)
        except BaseException as exc:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            if required or not isinstance(exc, OSError):
                raise
            log.debug("artifact cache %s cannot be written (%s); %s stays in %s only", self.root, exc, ref, self._shown)

    def _location(self) -> Location:
        if self._remote is None:
            from rung.objectstore import open_location

            assert self.uri is not None
            self._remote = open_location(self.uri)
        return self._remote

    def _unavailable(self, action: str, exc: OSError) -> ArtifactUnavailable:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        return ArtifactUnavailable(f"the artifact store {self._shown} cannot be used: {action} ({detail}); "
                                   "check artifacts.uri (its bucket, endpoint and credentials)")

    @property
    def _shown(self) -> str:
        """The remote's URI for messages, without its query (which may carry options that are nobody's business)."""
        return (self.uri or "").split("?", 1)[0]


def _key(ref: str) -> str:
    return f"{ref[:2]}/{ref}"
