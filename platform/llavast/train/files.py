"""Directories between object storage and a worker's local disk (checkpoints, base weights, artifacts).

URIs become filesystems only in `llavast.storage`; this module moves whole directory trees with them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from llavast import storage
from llavast.errors import StorageError
from llavast.storage import StorageOptions


def is_local(uri: str) -> bool:
    return storage.parse(uri).scheme == "file"


def upload_dir(local: Path, uri: str, options: StorageOptions) -> None:
    """Copy the tree under `local` to the directory `uri` (files keep their relative paths)."""
    fs, root = storage.fsspec_filesystem(uri, options)
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
        path = Path(storage.parse(uri).path)
        if not path.is_dir():
            raise StorageError(f"{uri} is not a directory")
        return path
    files = storage.list_files(uri, options)
    if not files:
        raise StorageError(f"{uri} is empty or does not exist")
    target = cache_root / hashlib.sha256(uri.encode()).hexdigest()[:16]
    prefix = storage.parse(uri).path.rstrip("/") + "/"
    for file_uri in files:
        if skip_suffixes and file_uri.endswith(skip_suffixes):
            continue
        rel = storage.parse(file_uri).path.removeprefix(prefix)
        dest = target / rel
        if not dest.exists():  # a cached file is complete: it is renamed into place only when written
            dest.parent.mkdir(parents=True, exist_ok=True)
            partial = dest.with_name(f"{dest.name}.{os.getpid()}.partial")  # workers may share the cache
            partial.write_bytes(storage.read_bytes(file_uri, options))
            partial.rename(dest)
    return target
