"""storage against a real S3-compatible server (moto_server on 127.0.0.1): fsspec and pyarrow agree."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llavast import storage
from llavast.errors import StorageError

pytestmark = pytest.mark.integration


def test_s3_roundtrip_fsspec_and_arrow(s3_server, s3_bucket: str) -> None:
    opts = s3_server.options
    uri = storage.join(s3_bucket, "a", "b.txt")
    storage.write_text(uri, "payload", opts)
    assert storage.read_text(uri, opts) == "payload"
    assert storage.list_files(s3_bucket, opts) == [uri]
    assert storage.list_names(storage.join(s3_bucket, "a"), opts) == {"b.txt"}

    table = pa.table({"x": [1, 2, 3]})
    fs, path = storage.arrow_filesystem(storage.join(s3_bucket, "t.parquet"), opts)
    pq.write_table(table, path, filesystem=fs)
    assert storage.exists(storage.join(s3_bucket, "t.parquet"), opts)
    fsspec_fs, fpath = storage.fsspec_filesystem(storage.join(s3_bucket, "t.parquet"), opts)
    with fsspec_fs.open(fpath, "rb") as f:
        assert pq.read_table(f).equals(table)

    storage.remove(storage.join(s3_bucket, "a"), opts)
    assert not storage.exists(uri, opts)
    with pytest.raises(StorageError, match="does not exist"):
        storage.read_bytes(uri, opts)


def test_create_exclusive_is_a_conditional_put(s3_server, s3_bucket: str) -> None:
    """The S3 server refuses a second create of one key (If-None-Match: *): leases rely on it."""
    opts = s3_server.options
    uri = storage.join(s3_bucket, "leases", "stage1.json")
    assert storage.create_exclusive(uri, b"first", opts) is True
    assert storage.create_exclusive(uri, b"second", opts) is False
    assert storage.read_bytes(uri, opts) == b"first"
    storage.remove(uri, opts)
    assert storage.create_exclusive(uri, b"third", opts) is True
