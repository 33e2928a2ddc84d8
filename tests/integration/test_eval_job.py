"""An eval job end to end on real services: a registered version of the tiny model on S3 (moto), the synthetic
benchmark split on S3, inference through Ray Data, results on S3, metrics, pictures and version tags in a real
MLflow server."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

import model_zoo
from llavast import storage
from llavast.config.eval import EvalJobConfig
from llavast.data.synth import SynthSpec, synthesize
from llavast.evaluate.job import run_eval_job
from llavast.evaluate.model import load_model_for_eval, resolve_source
from llavast.tracking import Tracker, register_stage_artifact
from llavast.tracking.tags import RUN_NAME
from llavast.train.artifact import StageArtifact, config_dict, write_artifact
from llavast.train.lora import LoraSpec, add_lora, merge_lora
from model_zoo.llava_st import build_tiny_checkpoint
from tests.fixtures.train import unique

pytestmark = pytest.mark.integration
ST_KEYS = ["m_tIoU", "tIoU@0.3", "tIoU@0.5", "tIoU@0.7", "m_sIoU", "sIoU@0.3", "sIoU@0.5", "sIoU@0.7",
           "m_vIoU", "vIoU@0.3", "vIoU@0.5", "vIoU@0.7"]
CAPTION_KEYS = ["BLEU_4", "METEOR", "ROUGE_L", "CIDEr"]


@pytest.fixture(scope="module")
def world(tmp_path_factory, s3_server, ray_local, mlflow_server):
    """A tiny base on disk; a stage-2-like artifact of it (a LoRA with non-zero weights, carried STP/LAPE)
    on S3, registered as a version; the synthetic benchmark on S3."""
    base = build_tiny_checkpoint(tmp_path_factory.mktemp("base") / "llava-ov-tiny")
    bucket = s3_server.create_bucket("eval")
    synth = synthesize(f"{bucket}/st-align", s3_server.options,
                       SynthSpec(videos=0, images=0, benchmark_videos=3, min_frames=8, max_frames=12, seed=5))
    contract = model_zoo.spec("llava_st")
    torch.manual_seed(0)
    model = contract.build(str(base))
    tokenizer = contract.load_tokenizer(str(base), model.config)
    spec = LoraSpec(r=4, alpha=8.0, dropout=0.0, target_modules=contract.lora_target_modules(model))
    add_lora(model, spec)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # peft starts B at 0 (a no-op adapter): give it weight, so loading it matters
            torch.nn.init.normal_(param, std=0.05)
    artifact = StageArtifact(
        manifest={"model": "llava_st", "stage": 2, "base": str(base), "overrides": {}},
        weights=contract.export_weights(model, contract.carried_groups), lora=contract.export_weights(model, {"lora"}),
        lora_spec=spec, config=config_dict(model.config))
    artifact_uri = f"{bucket}/artifacts/stage2"
    storage.upload_dir(write_artifact(Path(tempfile.mkdtemp()) / "artifact", artifact, tokenizer), artifact_uri,
               s3_server.options)
    merge_lora(model)
    tracker = Tracker(mlflow_server.uri)
    name = unique("eval-model")
    run_id = tracker.ensure_run(unique("eval-stages"), run_key=unique("stage2"), run_name="stage2")
    version = register_stage_artifact(tracker, name, artifact_uri, alias="stage2", run_id=run_id,
                                      tags={RUN_NAME: unique("stage2")})
    return {"base": base, "bucket": bucket, "benchmark": synth.benchmark, "root": f"{bucket}/st-align",
            "model": name, "version": version, "merged": model, "tracker": tracker, "s3": s3_server}


def _job(world, **generation) -> EvalJobConfig:
    return EvalJobConfig.model_validate({
        "name": "tiny-eval",
        "model": {"version": f"models:/{world['model']}@stage2"},
        "benchmarks": [{"task": t, "annotations": world["benchmark"][t], "media_root": world["root"]}
                       for t in ("stvg", "elc")],
        "out": f"{world['bucket']}/eval/{unique('run')}",
        "storage": world["s3"].options.model_dump(),
        "generation": {"max_new_tokens": 24, "batch_size": 2, "limit": 2, **generation},
        "decode": {"decode_concurrency": 1, "decode_num_cpus": 0.25, "decode_batch_size": 2, "fetch_threads": 2},
        "compute": {"num_actors": 1, "cpus_per_actor": 0.5},
        "tracking": {"uri": world["tracker"].uri, "experiment": unique("eval"), "pictures": 1},
    })


def test_the_version_loads_as_trained(world):
    """base -> artifact (carried weights, the LoRA merged in) is the model that was registered, weight for weight."""
    job = _job(world)
    source = resolve_source(job, world["tracker"])
    assert source.version == f"{world['model']}/{world['version']}" and source.base == str(world["base"])
    model, _ = load_model_for_eval(source, Path(tempfile.mkdtemp()), torch.device("cpu"))
    expected = world["merged"].state_dict()
    loaded = model.state_dict()
    assert loaded.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key


def test_eval_job_answers_scores_writes_and_logs(world):
    job = _job(world)
    progress: list[tuple[int, int]] = []
    result = run_eval_job(job, on_progress=lambda done, total: progress.append((done, total)))
    options = world["s3"].options

    # answers came back for every prompt, counted as they arrived
    assert progress[0] == (0, 4) and progress[-1] == (4, 4)
    summary = json.loads(storage.read_text(storage.join(job.out, "summary.json"), options))
    assert list(summary) == ["st-align/stvg", "st-align/elc"]
    assert list(summary["st-align/stvg"]) == ST_KEYS + ["parse_rate", "count"]
    assert list(summary["st-align/elc"]) == ST_KEYS + CAPTION_KEYS + ["parse_rate", "count"]
    assert summary["st-align/stvg"]["count"] == 2  # --limit
    for task in ("stvg", "elc"):
        rows = pq.read_table(io.BytesIO(storage.read_bytes(
            storage.join(job.out, "st-align", task, "results.parquet"), options))).to_pylist()
        assert [r["id"] for r in rows] == ["0", "1"]
        for row in rows:
            assert row["prompt"].startswith("<video>\n") and row["detail"] == ""
            assert 0 < row["new_tokens"] <= 24 and row["output"]
            assert row["parse_status"] in ("ok", "unparsable")
            assert {"tiou", "siou", "viou"} <= row.keys()
    info = json.loads(storage.read_text(storage.join(job.out, "run.json"), options))
    assert info["version"] == f"{world['model']}/{world['version']}"
    assert info["benchmarks"]["st-align/stvg"]["answers"] == {"ok": 2}

    # the eval's own MLflow run: tagged with the version, metrics equal to the files', a picture per task
    client = world["tracker"].client
    run = client.get_run(result.mlflow_run_id)
    assert run.data.tags["llavast.model_version"] == f"{world['model']}/{world['version']}"
    assert run.info.status == "FINISHED"
    for name, table in summary.items():
        for key, value in table.items():
            assert run.data.metrics[f"{name}/{key.replace('@', '_at_')}"] == pytest.approx(value), (name, key)
    for task in ("stvg", "elc"):
        pictures = [f.path for f in client.list_artifacts(result.mlflow_run_id, f"pictures/st-align/{task}")]
        assert pictures == [f"pictures/st-align/{task}/0.png"]
        local = client.download_artifacts(result.mlflow_run_id, pictures[0], tempfile.mkdtemp())
        assert Path(local).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    logged = {f.path for f in client.list_artifacts(result.mlflow_run_id, "results")}
    assert logged == {"results/summary.json", "results/run.json"}  # the rest stays on S3, named by a tag
    assert run.data.tags["llavast.eval_results"] == job.out

    # the registered version carries the numbers, for side-by-side comparison
    tags = client.get_model_version(world["model"], world["version"]).tags
    assert tags["eval.st-align.run_id"] == result.mlflow_run_id
    assert tags["eval.st-align.stvg.m_vIoU"] == f"{summary['st-align/stvg']['m_vIoU']:.4f}"
    assert tags["eval.st-align.elc.METEOR"] == f"{summary['st-align/elc']['METEOR']:.4f}"
    assert tags["eval.st-align.elc.parse_rate"] == f"{summary['st-align/elc']['parse_rate']:.4f}"
    assert tags["eval.st-align.stvg.vIoU_at_0.5"] == f"{summary['st-align/stvg']['vIoU@0.5']:.4f}"
