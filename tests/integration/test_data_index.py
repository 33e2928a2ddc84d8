"""`build_index` on real Ray Data over file:// and s3:// (moto server): counts, quarantine, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from llavast import storage
from llavast.data.annotations import load_mixture, read_annotations, sample_indices
from llavast.data.index import build_index
from llavast.data.manifest import SCHEMA
from llavast.data.synth import SynthSpec, synthesize
from llavast.errors import DataError
from llavast.storage import StorageOptions

pytestmark = pytest.mark.integration
OPTS = StorageOptions()


def _expected_kept(mixture_uri: str, options: StorageOptions, seed: int) -> int:
    total = 0
    for entry in load_mixture(mixture_uri, options).entries:
        n = len(read_annotations(entry.json_path, options))
        total += len(sample_indices(n, entry.strategy, seed, f"{entry.source}|{entry.json_path}"))
    return total


def _manifest_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "manifest").glob("*.parquet"))}


def test_index_file_uri_counts_and_determinism(ray_local, tmp_path: Path) -> None:
    synth = synthesize(str(tmp_path / "st"), OPTS, SynthSpec(videos=6, images=4, benchmark_videos=1))
    mixture = synth.mixtures[3]
    out = tmp_path / "index"
    summary = build_index(mixture, f"file://{out}", OPTS, seed=7, rows_per_shard=16)
    assert summary["quarantined"] == 0
    assert summary["total"] == _expected_kept(mixture, OPTS, seed=7)
    assert set(summary["by_task"]) >= {"STVG", "ELC", "SVG", "TVG", "REC", "caption"}
    table = pq.read_table(out / "manifest")
    assert table.schema.equals(SCHEMA) and table.num_rows == summary["total"]
    assert len(set(table.column("uid").to_pylist())) == table.num_rows
    first = _manifest_bytes(out)
    assert len(first) == len(summary["shards"]) > 1

    build_index(mixture, f"file://{out}", OPTS, seed=7, rows_per_shard=16)
    assert _manifest_bytes(out) == first
    assert json.loads((out / "summary.json").read_text()) == summary


def test_bad_records_quarantined_and_strict_fails(ray_local, tmp_path: Path) -> None:
    synth = synthesize(str(tmp_path / "st"), OPTS, SynthSpec(videos=5, images=2, benchmark_videos=1))
    ann = tmp_path / "st" / "annotations" / "tvg.jsonl"
    lines = ann.read_text().splitlines()
    bad = json.loads(lines[0])
    bad["variables"]["temporal_output_locations"] = [0.1]  # two placeholders, one value
    missing = json.loads(lines[1])
    missing["video"] = "videos/not_there.mp4"
    clipped = json.loads(lines[2])
    clipped["variables"]["temporal_output_locations"][0] = 1.2  # out of range: the release clips it
    extra = json.loads(lines[3])
    extra["variables"]["temporal_output_locations"].append(0.5)  # a value without placeholder: the release drops it
    ann.write_text("\n".join([json.dumps(bad), json.dumps(missing), "{not json", json.dumps(clipped),
                              json.dumps(extra), *lines[4:]]) + "\n")
    mix = tmp_path / "st" / "mixtures" / "broken.yaml"
    mix.write_text("datasets:\n"
                   "  - {json_path: ../annotations/tvg.jsonl, source: tvg, data_folder: ..}\n"
                   "  - {json_path: ../annotations/gone.json, source: gone, data_folder: ..}\n")
    out = tmp_path / "index"
    summary = build_index(str(mix), str(out), OPTS)
    reasons = {"placeholder_count": 1, "media_missing": 1, "json": 1, "annotation_unreadable": 1}
    assert summary["quarantined_by_reason"] == reasons
    assert summary["total"] == synth.samples["tvg"] - 2  # the unparsable line replaced no record
    lines = [json.loads(x) for x in (out / "quarantine.jsonl").read_text().splitlines()]
    assert {q["reason"] for q in lines} == set(reasons)
    assert all(q["source_file"] and q["detail"] for q in lines)
    assert next(q for q in lines if q["reason"] == "media_missing")["id"] == missing["id"]
    assert summary["validation"] == "release"
    assert summary["tolerated"] == {"clipped_values": 1, "extra_values": 1, "dropped_leading_gpt": 0, "moved_marker": 0}
    kept = pq.read_table(out / "manifest").to_pylist()
    variables = {r["id"]: r["variables"]["temporal_output_locations"] for r in kept}
    assert variables[clipped["id"]][0] == 1.0 and len(variables[extra["id"]]) == 2

    strict = build_index(str(mix), str(tmp_path / "strict-validation"), OPTS, validation="strict")
    assert strict["quarantined_by_reason"] == {**reasons, "placeholder_count": 2, "value_range": 1}
    assert strict["total"] == summary["total"] - 2 and not any(strict["tolerated"].values())

    with pytest.raises(DataError, match="--strict: 4 bad record"):
        build_index(str(mix), str(tmp_path / "strict"), OPTS, strict=True)
    assert not (tmp_path / "strict" / "summary.json").exists()
    assert not list((tmp_path / "strict").glob("manifest/*.parquet"))


def test_index_over_s3(ray_local, s3_server, s3_bucket: str) -> None:
    opts = s3_server.options
    synth = synthesize(storage.join(s3_bucket, "st"), opts, SynthSpec(videos=3, images=2, benchmark_videos=1))
    out = storage.join(s3_bucket, "index")
    summary = build_index(synth.mixtures[2], out, opts)
    assert summary["quarantined"] == 0 and summary["total"] == _expected_kept(synth.mixtures[2], opts, seed=0)
    fs, path = storage.arrow_filesystem(storage.join(out, "manifest"), opts)
    assert pq.read_table(path, filesystem=fs).num_rows == summary["total"]
