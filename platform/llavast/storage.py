"""The one place where a URI becomes a filesystem: `s3://bucket/key`, `file:///abs/path` and plain paths.

Everything that touches object storage (annotation reading, manifest writing, media fetching inside Ray
Data workers, Ray Data's own `read_parquet`) goes through here, so an S3-compatible endpoint override is
configured once. Credentials are never passed in: boto3/s3fs and pyarrow resolve them from the standard
AWS chain (environment, shared config/credentials files, instance or pod roles), so job YAMLs that get
logged never hold secrets.

Object stores err: 500s, 503 SlowDown when a prefix is throttled, connections reset, slow answers. Both
clients retry each request up to `MAX_ATTEMPTS` times with exponential backoff and jitter (botocore's and the
AWS SDK's "standard" retry mode: errors, throttling and connection failures); an outage that outlasts them
fails in one line that names the operation and the URI (`_wrap`).
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import fsspec
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, field_validator

from llavast.errors import StorageError

_SCHEMES = ("s3", "file", "")
MAX_ATTEMPTS = 10  # per request: with the standard mode's backoff (base 0.5 s .. 20 s cap), about a minute


class StorageOptions(BaseModel):
    """How to reach object storage; no secrets here (those come from the AWS credential chain).

    `endpoint_url` points s3:// URIs at an S3-compatible service (MinIO, Ceph, a moto server in tests);
    leave it empty for AWS itself.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoint_url: str | None = None
    region: str | None = None

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint_has_scheme(cls, value: str | None) -> str | None:
        if value is not None and urlparse(value).scheme not in ("http", "https"):
            raise ValueError(f"endpoint_url must start with http:// or https://, got {value!r}")
        return value


@dataclass(frozen=True)
class Location:
    """A parsed URI: `scheme` is "s3" or "file"; `path` is what the filesystems expect.

    For s3 the path is `bucket/key`; for local files an absolute POSIX path.
    """

    scheme: str
    path: str

    @property
    def uri(self) -> str:
        return f"s3://{self.path}" if self.scheme == "s3" else f"file://{self.path}"


def parse(uri: str) -> Location:
    """Parse `s3://`, `file://` or a plain (relative or absolute) local path; anything else is an error."""
    if not uri:
        raise StorageError("empty URI: give s3://bucket/key, file:///abs/path or a local path")
    if "://" not in uri:
        return Location("file", str(Path(uri).expanduser().resolve()))
    parsed = urlparse(uri)
    if parsed.scheme not in _SCHEMES:
        raise StorageError(f"unsupported URI scheme {parsed.scheme!r} in {uri!r}: use s3://, file:// or a path")
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StorageError(f"s3 URI {uri!r} has no bucket: write s3://bucket/key")
        return Location("s3", posixpath.join(parsed.netloc, parsed.path.lstrip("/")).rstrip("/"))
    if parsed.netloc not in ("", "localhost"):
        raise StorageError(f"file URI {uri!r} names a host; write file:///absolute/path")
    return Location("file", str(Path(parsed.path).resolve()))


def join(base: str, *parts: str) -> str:
    """Join path parts onto a URI, keeping its scheme (plain paths become absolute local paths)."""
    loc = parse(base)
    return Location(loc.scheme, posixpath.join(loc.path, *parts)).uri if parts else loc.uri


def resolve(base_dir: str, ref: str) -> str:
    """Resolve `ref` (a URI or a path relative to the directory `base_dir`) to a normalised URI.

    Mixture YAMLs name annotation files and data folders relative to themselves, so a dataset tree
    can be copied between a laptop and a bucket unchanged. `..` may not climb above an S3 bucket.
    """
    if "://" in ref or ref.startswith("/"):
        return parse(ref).uri
    loc = parse(base_dir)
    joined = posixpath.normpath(posixpath.join(loc.path, ref))
    if loc.scheme == "s3":
        bucket = loc.path.split("/", 1)[0]
        if joined != bucket and not joined.startswith(bucket + "/"):
            raise StorageError(f"{ref!r} relative to {base_dir!r} climbs above the bucket")
    return Location(loc.scheme, joined).uri


def dirname(uri: str) -> str:
    loc = parse(uri)
    return Location(loc.scheme, posixpath.dirname(loc.path)).uri


def fsspec_filesystem(uri: str, options: StorageOptions) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem (s3fs or local) for `uri` and the path inside it.

    The listings cache is off: index jobs list folders that other tasks are writing.
    """
    loc = parse(uri)
    if loc.scheme == "file":
        return fsspec.filesystem("file"), loc.path
    client_kwargs = {"region_name": options.region} if options.region else {}
    fs = fsspec.filesystem(
        "s3", endpoint_url=options.endpoint_url, client_kwargs=client_kwargs, use_listings_cache=False,
        config_kwargs={"retries": {"mode": "standard", "max_attempts": MAX_ATTEMPTS}})
    return fs, loc.path


def arrow_filesystem(uri: str, options: StorageOptions) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem for `uri` (what Ray Data's read/write_parquet take) and the path inside it."""
    loc = parse(uri)
    if loc.scheme == "file":
        return pafs.LocalFileSystem(), loc.path
    kwargs: dict[str, object] = {}
    if options.endpoint_url:
        endpoint = urlparse(options.endpoint_url)
        kwargs.update(endpoint_override=endpoint.netloc, scheme=endpoint.scheme)
    if options.region:
        kwargs["region"] = options.region
    return pafs.S3FileSystem(retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=MAX_ATTEMPTS),
                             **kwargs), loc.path


def _wrap(uri: str, action: str, exc: Exception) -> StorageError:
    if isinstance(exc, FileNotFoundError):
        return StorageError(f"{uri} does not exist ({action}); check the path and the bucket")
    retried = f" (after {MAX_ATTEMPTS} attempts)" if parse(uri).scheme == "s3" else ""
    return StorageError(f"cannot {action} {uri}{retried}: {type(exc).__name__}: {exc}")


def read_bytes(uri: str, options: StorageOptions) -> bytes:
    fs, path = fsspec_filesystem(uri, options)
    try:
        return fs.cat_file(path)
    except Exception as exc:
        raise _wrap(uri, "read", exc) from exc


def read_text(uri: str, options: StorageOptions) -> str:
    return read_bytes(uri, options).decode("utf-8")


def write_bytes(uri: str, data: bytes, options: StorageOptions) -> None:
    """Write a whole object (creating parent directories on local filesystems)."""
    fs, path = fsspec_filesystem(uri, options)
    try:
        if parse(uri).scheme == "file":
            fs.makedirs(posixpath.dirname(path), exist_ok=True)
        fs.pipe_file(path, data)
    except Exception as exc:
        raise _wrap(uri, "write", exc) from exc


def create_exclusive(uri: str, data: bytes, options: StorageOptions) -> bool:
    """Write a whole object only if none exists at `uri`, atomically; False when one does.

    Local files: an O_EXCL create. S3: a conditional PUT (`If-None-Match: *`), which AWS S3 and current
    S3-compatible stores honour; a store that ignores the header would make this a plain write.
    """
    loc = parse(uri)
    if loc.scheme == "file":
        try:
            os.makedirs(posixpath.dirname(loc.path), exist_ok=True)
            fd = os.open(loc.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise _wrap(uri, "create", exc) from exc
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True
    fs, path = fsspec_filesystem(uri, options)
    try:
        fs.pipe_file(path, data, mode="create")
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno == errno.EINVAL and "Precondition" in str(exc):  # s3fs's 412 without a Condition field
            return False
        raise _wrap(uri, "create", exc) from exc
    except Exception as exc:
        raise _wrap(uri, "create", exc) from exc
    return True


def write_parquet(uri: str, rows: list[dict[str, Any]], options: StorageOptions) -> None:
    """Write rows (dicts of one shape) as one Parquet object."""
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    write_bytes(uri, sink.getvalue().to_pybytes(), options)


def write_text(uri: str, text: str, options: StorageOptions) -> None:
    write_bytes(uri, text.encode("utf-8"), options)


def exists(uri: str, options: StorageOptions) -> bool:
    fs, path = fsspec_filesystem(uri, options)
    try:
        return fs.exists(path)
    except Exception as exc:
        raise _wrap(uri, "check", exc) from exc


def list_files(uri: str, options: StorageOptions, suffix: str = "") -> list[str]:
    """URIs of the files under the directory `uri` (recursive), sorted; [] when it does not exist."""
    fs, path = fsspec_filesystem(uri, options)
    loc = parse(uri)
    try:
        found = fs.find(path) if fs.exists(path) else []
    except Exception as exc:
        raise _wrap(uri, "list", exc) from exc
    return sorted(Location(loc.scheme, p).uri for p in found if p.endswith(suffix))


def list_names(uri: str, options: StorageOptions) -> set[str]:
    """Base names of the entries directly inside the directory `uri`; empty when it does not exist."""
    fs, path = fsspec_filesystem(uri, options)
    try:
        if not fs.exists(path):
            return set()
        return {posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False)}
    except Exception as exc:
        raise _wrap(uri, "list", exc) from exc


def remove(uri: str, options: StorageOptions) -> None:
    """Remove a file or a directory tree; a missing one is not an error."""
    fs, path = fsspec_filesystem(uri, options)
    try:
        if fs.exists(path):
            fs.rm(path, recursive=True)
    except Exception as exc:
        raise _wrap(uri, "remove", exc) from exc


def makedirs(uri: str, options: StorageOptions) -> None:
    """Create a directory (and parents) on local filesystems; object stores have no directories."""
    loc = parse(uri)
    if loc.scheme == "file":
        fs, path = fsspec_filesystem(uri, options)
        fs.makedirs(path, exist_ok=True)


# ---- whole directory trees between storage and a local disk (checkpoints, base weights, artifacts) ----

def is_local(uri: str) -> bool:
    return parse(uri).scheme == "file"


def upload_dir(local: Path, uri: str, options: StorageOptions) -> None:
    """Copy the tree under `local` to the directory `uri` (files keep their relative paths)."""
    fs, root = fsspec_filesystem(uri, options)
    try:
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            target = f"{root}/{path.relative_to(local).as_posix()}"
            if is_local(uri):
                fs.makedirs(str(Path(target).parent), exist_ok=True)
            fs.put_file(str(path), target)
    except Exception as exc:
        raise StorageError(f"cannot upload {local} to {uri}: {type(exc).__name__}: {exc}") from exc


def download_dir(uri: str, options: StorageOptions, cache_root: Path, skip_suffixes: tuple[str, ...] = ()) -> Path:
    """A local directory holding the tree at `uri`: the path itself when local, else a cached download (without
    the files whose names end with one of `skip_suffixes`: a config and tokenizer without the weights)."""
    if is_local(uri):
        path = Path(parse(uri).path)
        if not path.is_dir():
            raise StorageError(f"{uri} is not a directory")
        return path
    files = list_files(uri, options)
    if not files:
        raise StorageError(f"{uri} is empty or does not exist")
    target = cache_root / hashlib.sha256(uri.encode()).hexdigest()[:16]
    prefix = parse(uri).path.rstrip("/") + "/"
    for file_uri in files:
        if skip_suffixes and file_uri.endswith(skip_suffixes):
            continue
        rel = parse(file_uri).path.removeprefix(prefix)
        dest = target / rel
        if not dest.exists():  # a cached file is complete: it is renamed into place only when written
            dest.parent.mkdir(parents=True, exist_ok=True)
            partial = dest.with_name(f"{dest.name}.{os.getpid()}.partial")  # workers may share the cache
            partial.write_bytes(read_bytes(file_uri, options))
            partial.rename(dest)
    return target
