"""Where rung keeps files that every host must see: a local folder, a shared volume or an object store.

A location is a URI. A plain path (relative paths are taken from the
project root) or ``file://`` is a folder; ``s3://bucket/prefix``,
``gs://bucket/prefix`` and ``abfs://container@account/prefix`` go
through pyarrow's own filesystems (no extra package). For S3-compatible
servers (MinIO, Ceph, a local test server) the endpoint comes from the
standard ``AWS_ENDPOINT_URL`` variable or from the URI's query
(``s3://bucket/prefix?endpoint_override=http://127.0.0.1:9000&scheme=http``);
credentials come from the usual ``AWS_*`` variables or files, never from
rung.yaml.

Why one module: the request log and the artifact store both need the same
three things from a location, whatever it is: write a file so that
readers see all of it or nothing, list what is under a prefix, and read a
file back. A folder does the first with a hidden temporary name and a
rename; an object store does it by construction (an object appears when
its single upload, or its multipart upload, completes; a writer killed
midway leaves nothing under the name).

Timeouts are short by default (``connect_timeout`` 2 s, ``request_timeout``
10 s, three attempts) so that a store that went away fails a write in
seconds, which the callers count, instead of hanging a writer thread.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast
from urllib.parse import SplitResult, parse_qsl, urlsplit

from rung.errors import ConfigError

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.fs as pafs

__all__ = ["Location", "StoredFile", "open_location", "is_remote", "REMOTE_SCHEMES"]

REMOTE_SCHEMES = ("s3", "gs", "gcs", "abfs", "az")
_SPOOL_BYTES = 64 << 20  # a larger file is staged on disk
_COPY_BYTES = 8 << 20
_S3_DEFAULTS = {"connect_timeout": 2.0, "request_timeout": 10.0}


def is_remote(uri: str | os.PathLike[str]) -> bool:
    """Whether ``uri`` names an object store rather than a folder."""
    return urlsplit(str(uri)).scheme.lower() in REMOTE_SCHEMES


@dataclass(frozen=True)
class StoredFile:
    """One file found under a location: its path relative to the location, its size and modification time."""

    path: str
    size: int
    mtime_ns: int


class Location:
    """A folder or an object-store prefix, and the few operations rung needs on it.

    Paths given to the methods are relative to the location, with ``/``
    between parts whatever the platform.
    """

    def __init__(self, uri: str, filesystem: pafs.FileSystem, base: str, *, local: bool) -> None:
        self.uri = uri
        self.filesystem = filesystem
        self.base = base.rstrip("/")
        self.local = local

    def __repr__(self) -> str:
        return f"Location({self.uri!r})"

    def full(self, path: str = "") -> str:
        """The path of ``path`` inside the filesystem (for pyarrow and DuckDB)."""
        return f"{self.base}/{path}" if path else self.base

    def local_path(self, path: str = "") -> Path | None:
        """The file's path on this machine, or None when the location is an object store."""
        return Path(self.full(path)) if self.local else None

    def child(self, prefix: str) -> Location:
        """The location under ``prefix`` (e.g. one replica's part of the request log)."""
        return Location(f"{self.uri.rstrip('/')}/{prefix}", self.filesystem, self.full(prefix), local=self.local)

    # -- writing ------------------------------------------------------------------------------

    def write(self, path: str, produce: Callable[[BinaryIO], Any]) -> None:
        """Write ``path`` with ``produce(stream)`` so that a reader sees the whole file or no file.

        A folder gets a hidden temporary name in the same directory, then a
        rename; for an object store the bytes are staged (in memory, on disk
        past 64 MiB) and then uploaded, and an object appears only when its
        upload completes. On any failure nothing is left under ``path`` (nor
        a temporary file).
        """
        if self.local:
            def into(temporary: Path) -> None:
                with open(temporary, "wb") as stream:
                    produce(stream)

            self._publish(path, into)
            return
        # Staged first, uploaded only once ``produce`` has succeeded: pyarrow's output streams cannot be
        # aborted, and closing one (or dropping it) would publish a half-written object.
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as staged:
            produce(cast(BinaryIO, staged))
            staged.seek(0)
            with self.filesystem.open_output_stream(self.full(path)) as stream:
                shutil.copyfileobj(staged, stream, _COPY_BYTES)

    def _publish(self, path: str, write_temporary: Callable[[Path], None]) -> None:
        """On a folder: ``write_temporary`` fills a hidden file beside ``path``, which is then renamed into place."""
        target = Path(self.full(path))
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            write_temporary(temporary)
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
            raise

    def write_bytes(self, path: str, data: bytes) -> None:
        self.write(path, lambda stream: stream.write(data))

    def write_table(self, path: str, table: pa.Table) -> None:
        """One Parquet file, written whole or not at all.

        Arrow writes it without Python in the loop (the GIL is free for a
        gateway's event loop meanwhile): to the hidden temporary file on a
        folder, to memory for an object store, which then gets it in one
        upload.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.local:
            self._publish(path, lambda temporary: pq.write_table(table, str(temporary)))
            return
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        data = sink.getvalue()
        with self.filesystem.open_output_stream(self.full(path)) as stream:
            stream.write(data)

    # -- reading ----------------------------------------------------------------------------

    def read_bytes(self, path: str) -> bytes:
        """The file's bytes; :class:`FileNotFoundError` when it is not there."""
        if self.local:
            return Path(self.full(path)).read_bytes()
        with self.filesystem.open_input_stream(self.full(path)) as stream:
            data: bytes = stream.read()
            return data

    def exists(self, path: str) -> bool:
        import pyarrow.fs as pafs

        if self.local:
            return Path(self.full(path)).exists()
        return bool(self.filesystem.get_file_info(self.full(path)).type != pafs.FileType.NotFound)

    def list(self, prefix: str = "", *, suffix: str = "", recursive: bool = True) -> list[StoredFile]:
        """Every file under ``prefix`` (recursively, unless not) whose name ends with ``suffix``, sorted by path.

        Hidden names (a leading ``.``: temporary files) are left out. A
        prefix that does not exist is an empty list.
        """
        import pyarrow.fs as pafs

        root = self.full(prefix)
        selector = pafs.FileSelector(root, recursive=recursive, allow_not_found=True)
        found = []
        start = len(self.base) + 1
        for info in self.filesystem.get_file_info(selector):
            if info.type != pafs.FileType.File or not info.base_name.endswith(suffix) or info.base_name.startswith("."):
                continue
            found.append(StoredFile(info.path[start:], int(info.size or 0), int(info.mtime_ns or 0)))
        return sorted(found, key=lambda f: f.path)

    def dirs(self, prefix: str = "") -> builtins.list[str]:
        """The names of the folders right under ``prefix`` (on an object store: the common prefixes), sorted.

        One listing call with a delimiter on an object store, so a reader
        walks a hive layout (``replica=a/model=m/date=d``) level by level
        instead of listing everything under it.
        """
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(self.full(prefix), recursive=False, allow_not_found=True)
        return sorted(info.base_name for info in self.filesystem.get_file_info(selector)
                      if info.type == pafs.FileType.Directory and not info.base_name.startswith("."))

    def delete(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.filesystem.delete_file(self.full(path))


def open_location(uri: str | os.PathLike[str], *, root: Path | None = None) -> Location:
    """The location ``uri`` names; a relative path is taken from ``root`` (the project).

    :class:`ConfigError` for a scheme rung cannot open or a bucket-less
    URI, naming what to write instead. An object store's filesystem is
    made once per URI and environment (making one costs tens of
    milliseconds, and a controller reads the request log every tick).
    """
    import pyarrow.fs as pafs

    text = str(uri)
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt"):  # a Windows drive letter is a path
        path = Path(parts.path if scheme == "file" else text).expanduser()
        if not path.is_absolute() and root is not None:
            path = root / path
        return Location(str(path), pafs.LocalFileSystem(), str(path), local=True)
    key = (text, *sorted((k, v) for k, v in os.environ.items() if k.startswith(("AWS_", "GOOGLE_", "AZURE_"))))
    with _OPENED_LOCK:
        opened = _OPENED.get(key)
    if opened is None:
        opened = _open_remote(text, parts, scheme)
        with _OPENED_LOCK:
            if len(_OPENED) >= 32:
                _OPENED.pop(next(iter(_OPENED)))
            _OPENED[key] = opened
    return opened


_OPENED: dict[tuple[Any, ...], Location] = {}
_OPENED_LOCK = threading.Lock()


def _open_remote(text: str, parts: SplitResult, scheme: str) -> Location:
    import pyarrow.fs as pafs

    if scheme not in REMOTE_SCHEMES:
        raise ConfigError(f"{text}: rung cannot store files there; use a folder, s3://, gs:// or abfs://")
    if not parts.netloc:
        raise ConfigError(f"{text}: name the bucket (e.g. s3://my-bucket/rung)")
    try:
        if scheme == "s3":
            filesystem, base = _s3(parts.netloc, parts.path, dict(parse_qsl(parts.query)))
        else:
            filesystem, base = pafs.FileSystem.from_uri(text)
    except (ValueError, TypeError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise ConfigError(f"{text}: cannot open this location: {exc}") from exc
    clean = text.split("?", 1)[0].rstrip("/")
    return Location(clean, filesystem, base, local=False)


def _s3(bucket: str, path: str, query: dict[str, str]) -> tuple[pafs.FileSystem, str]:
    """An S3 filesystem with short timeouts; the query's options (``endpoint_override``, ``region``...) win."""
    import pyarrow.fs as pafs

    options: dict[str, Any] = dict(_S3_DEFAULTS)
    for key, value in query.items():
        if key in ("connect_timeout", "request_timeout"):
            options[key] = float(value)
        elif key in ("allow_bucket_creation", "force_virtual_addressing", "anonymous", "allow_delayed_open", "background_writes"):
            options[key] = value.lower() in ("1", "true", "yes")
        else:
            options[key] = value
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint and "endpoint_override" not in options:
        options["endpoint_override"] = endpoint
    override = str(options.get("endpoint_override", ""))
    if "://" in override and "scheme" not in options:  # http://host:port: pyarrow wants the scheme apart
        options["scheme"], options["endpoint_override"] = override.split("://", 1)
    options.setdefault("retry_strategy", pafs.AwsStandardS3RetryStrategy(max_attempts=3))
    # the bytes are staged whole before a stream opens, so a small file is one PutObject instead of a multipart upload
    options.setdefault("allow_delayed_open", True)
    if "region" not in options and not (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")):
        options["region"] = "us-east-1"  # S3-compatible servers ignore it; AWS would otherwise be asked over the network
    return pafs.S3FileSystem(**options), f"{bucket}{path}".rstrip("/")
