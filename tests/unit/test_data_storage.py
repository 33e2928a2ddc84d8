"""storage: URI parsing and resolution rules, and real reads/writes on the local filesystem."""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs
import pytest

from llavast import storage
from llavast.errors import StorageError
from llavast.storage import StorageOptions

OPTS = StorageOptions()


def test_parse_schemes(tmp_path: Path) -> None:
    assert storage.parse("s3://bucket/a/b.json") == storage.Location("s3", "bucket/a/b.json")
    assert storage.parse("s3://bucket") == storage.Location("s3", "bucket")
    assert storage.parse(f"file://{tmp_path}/x") == storage.Location("file", f"{tmp_path}/x")
    assert storage.parse(str(tmp_path / "y")).uri == f"file://{tmp_path}/y"


@pytest.mark.parametrize("bad", ["", "gs://bucket/x", "s3:///key", "file://host/x"])
def test_parse_rejects(bad: str) -> None:
    with pytest.raises(StorageError):
        storage.parse(bad)


def test_resolve_relative_and_absolute() -> None:
    assert storage.resolve("s3://b/mixtures", "../annotations/tvg.json") == "s3://b/annotations/tvg.json"
    assert storage.resolve("s3://b/mixtures", "s3://other/x.json") == "s3://other/x.json"
    assert storage.resolve("file:///data/m", "..") == "file:///data"
    with pytest.raises(StorageError, match="climbs above the bucket"):
        storage.resolve("s3://b/m", "../../x")


def test_endpoint_must_be_http() -> None:
    with pytest.raises(ValueError):
        StorageOptions(endpoint_url="127.0.0.1:9000")


def test_local_roundtrip(tmp_path: Path) -> None:
    uri = storage.join(str(tmp_path), "deep", "dir", "f.txt")
    storage.write_text(uri, "hello", OPTS)
    assert storage.read_text(uri, OPTS) == "hello"
    assert storage.exists(uri, OPTS)
    assert storage.list_files(str(tmp_path), OPTS) == [uri]
    assert storage.list_names(storage.dirname(uri), OPTS) == {"f.txt"}
    fs, path = storage.arrow_filesystem(uri, OPTS)
    assert isinstance(fs, pafs.LocalFileSystem) and fs.get_file_info(path).size == 5
    storage.remove(str(tmp_path / "deep"), OPTS)
    assert not storage.exists(uri, OPTS)


def test_missing_file_is_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        storage.read_bytes(str(tmp_path / "nope"), OPTS)
