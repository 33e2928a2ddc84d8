"""Registry reads used by the pipeline (skip by fingerprint) and `llavast registry`, on a real MLflow server."""

from llavast.tracking import Tracker
from llavast.tracking.catalog import find_version, list_models, list_versions, tag_version
from llavast.tracking.tags import NODE_FINGERPRINT


def test_versions_aliases_and_fingerprint_lookup(mlflow_server):
    tracker = Tracker(mlflow_server.uri)
    client = tracker.client
    client.create_registered_model("catalog-m")
    run = client.create_run(client.create_experiment("catalog-e"))
    for i in range(3):
        client.create_model_version("catalog-m", f"s3://bucket/artifact{i}", run_id=run.info.run_id,
                                    tags={"llavast.stage": str(i + 1)})
    client.set_registered_model_alias("catalog-m", "stage1", "1")
    client.set_registered_model_alias("catalog-m", "newest", "3")
    tag_version(tracker, "catalog-m", "2", {NODE_FINGERPRINT: "abc"})

    versions = list_versions(tracker, "catalog-m")
    assert [(v.version, v.aliases) for v in versions] == [("1", ("stage1",)), ("2", ()), ("3", ("newest",))]
    assert versions[2].source == "s3://bucket/artifact2" and versions[0].tags["llavast.stage"] == "1"
    assert find_version(tracker, "catalog-m", NODE_FINGERPRINT, "abc").uri == "models:/catalog-m/2"
    assert find_version(tracker, "catalog-m", NODE_FINGERPRINT, "zzz") is None
    assert find_version(tracker, "no-such-model", NODE_FINGERPRINT, "abc") is None
    assert "catalog-m" in list_models(tracker)
