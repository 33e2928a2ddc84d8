"""An object store that errs (tests/fixtures/faulty_s3.py in front of the test S3 server): 500s, 503 SlowDown,
connections reset after the request landed, slow answers. Reads and writes through both clients (s3fs for files,
pyarrow for Parquet, as Ray Data and Ray Train use it) retry and return what a clean store would; a lease is
taken and renewed through it; an outage that outlasts the retries fails in one line that names the operation and
the object."""

from __future__ import annotations

import json
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llavast import storage
from llavast.errors import StorageError
from llavast.lease import Lease
from llavast.storage import StorageOptions
from tests.fixtures.faulty_s3 import FaultyProxy, Rule
from tests.fixtures.s3 import S3Server

pytestmark = pytest.mark.integration


def _through(proxy: FaultyProxy) -> StorageOptions:
    return StorageOptions(endpoint_url=proxy.endpoint_url, region="us-east-1")


@pytest.mark.parametrize("action", ["500", "503", "reset", "delay"])
def test_reads_and_writes_return_what_a_clean_store_would(s3_server: S3Server, faulty_s3: FaultyProxy,
                                                          action: str) -> None:
    bucket = s3_server.create_bucket("faults")
    options = _through(faulty_s3)
    faulty_s3.rules.append(Rule(action, rate=0.3, delay_s=1.0))
    for i in range(4):
        uri = f"{bucket}/media/clip_{i}.bin"
        storage.write_bytes(uri, bytes([i]) * 2048, options)
        assert storage.exists(uri, options)
        assert storage.read_bytes(uri, options) == bytes([i]) * 2048
    assert storage.list_files(f"{bucket}/media", options) == [f"{bucket}/media/clip_{i}.bin" for i in range(4)]
    fs, path = storage.arrow_filesystem(bucket, options)  # a manifest shard, as Ray Data reads and writes them
    table = pa.table({"uid": [f"s{i}" for i in range(500)], "row": list(range(500))})
    pq.write_table(table, f"{path}/manifest/part-0.parquet", filesystem=fs)
    assert pq.read_table(f"{path}/manifest/part-0.parquet", filesystem=fs).equals(table)
    assert faulty_s3.hits[action] > 0  # the faults happened, and were absorbed


def test_a_lease_is_taken_and_renewed_through_a_flaky_store(s3_server: S3Server, faulty_s3: FaultyProxy) -> None:
    bucket = s3_server.create_bucket("faults")
    options = _through(faulty_s3)
    uri = f"{bucket}/leases/stage1.json"
    faulty_s3.rules.append(Rule("503", rate=0.4))
    with Lease(uri, options, what="stage 1", heartbeat_s=0.2):
        first = json.loads(storage.read_text(uri, StorageOptions(endpoint_url=s3_server.endpoint_url)))["heartbeat"]
        time.sleep(2.0)
        later = json.loads(storage.read_text(uri, StorageOptions(endpoint_url=s3_server.endpoint_url)))["heartbeat"]
        assert later > first
    assert not storage.exists(uri, StorageOptions(endpoint_url=s3_server.endpoint_url))
    assert faulty_s3.hits["503"] > 0


def test_a_lease_whose_create_answer_was_lost_is_still_taken(s3_server: S3Server, faulty_s3: FaultyProxy) -> None:
    """The conditional PUT lands, its answer is lost, the client retries and meets its own lease (412): the
    runner holds it, rather than waiting for itself."""
    bucket = s3_server.create_bucket("faults")
    uri = f"{bucket}/leases/stage1.json"
    faulty_s3.rules.append(Rule("reset", method="PUT", path="/leases/", times=1))
    started = time.monotonic()
    with Lease(uri, _through(faulty_s3), what="stage 1"):
        assert time.monotonic() - started < 30
    assert faulty_s3.hits["reset"] == 1


def test_an_outage_that_outlasts_the_retries_fails_in_one_line(s3_server: S3Server, faulty_s3: FaultyProxy) -> None:
    bucket = s3_server.create_bucket("faults")
    options = _through(faulty_s3)
    storage.write_text(f"{bucket}/summary.json", "{}", options)
    faulty_s3.rules.append(Rule("503"))
    started = time.monotonic()
    with pytest.raises(StorageError) as caught:
        storage.read_text(f"{bucket}/summary.json", options)
    seconds = time.monotonic() - started
    message = str(caught.value)
    assert message.startswith(f"cannot read {bucket}/summary.json (after {storage.MAX_ATTEMPTS} attempts): ")
    assert "Service Unavailable" in message and "\n" not in message, message
    assert faulty_s3.hits["503"] >= storage.MAX_ATTEMPTS  # every attempt was made
    print(f"outage reported after {seconds:.1f}s")
