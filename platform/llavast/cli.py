"""`llavast`: the command line. Commands are thin wrappers over library functions; this is the only
module that prints for humans. A user-caused error (`LlavastError`) prints as one line and exits 1;
`llavast --debug ...` shows its traceback.

Sub-apps: `data` (synth, index), `services` (mlflow); commands: `train`. Add others with
`app.add_typer(...)` and decorate commands with `@user_errors`.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from llavast.errors import LlavastError
from llavast.storage import StorageOptions

app = typer.Typer(no_args_is_help=True, add_completion=False, help="LLaVA-ST platform: data, training, tracking.")
data_app = typer.Typer(no_args_is_help=True, help="ST-Align: synthesise a dataset, index a stage mixture.")
app.add_typer(data_app, name="data")
console = Console()
errors = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

EndpointOpt = Annotated[str | None, typer.Option(
    "--endpoint-url", envvar="AWS_ENDPOINT_URL_S3",
    help="S3-compatible endpoint (MinIO, Ceph, ...); credentials come from the AWS credential chain.")]
RegionOpt = Annotated[str | None, typer.Option("--region", envvar="AWS_REGION", help="S3 region.")]


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
         verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def user_errors(command: F) -> F:
    """Print a LlavastError as one red line and exit 1 (unless --debug); the command takes `ctx: typer.Context`."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except LlavastError as exc:
            ctx = kwargs.get("ctx")
            if ctx is None or ctx.find_root().params.get("debug"):
                raise
            errors.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def storage_options(endpoint_url: str | None, region: str | None) -> StorageOptions:
    return StorageOptions(endpoint_url=endpoint_url or None, region=region or None)


def _counts_table(counts: dict[str, int], what: str = "name") -> Table:
    table = Table()
    table.add_column(what)
    table.add_column("count", justify="right")
    for name, count in sorted(counts.items()):
        table.add_row(str(name), str(count))
    return table


@data_app.command("synth")
@user_errors
def data_synth(
    ctx: typer.Context,
    out: Annotated[str, typer.Option("--out", help="Where to write: s3://bucket/prefix, file:// or a path.")],
    videos: Annotated[int, typer.Option(help="Training videos (each yields 10 samples).")] = 40,
    images: Annotated[int, typer.Option(help="Training images (each yields 4 samples).")] = 20,
    benchmark_videos: Annotated[int, typer.Option(help="Held-out videos for the STVG/ELC/SVG benchmark.")] = 6,
    seed: Annotated[int, typer.Option(help="Same seed, same bytes.")] = 0,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
) -> None:
    """Write a synthetic ST-Align (mp4 videos, images, annotations, stage mixtures, benchmark)."""
    from llavast.data.synth import SynthSpec, synthesize

    with console.status("synthesising videos and annotations"):
        result = synthesize(out, storage_options(endpoint_url, region),
                            SynthSpec(videos=videos, images=images, benchmark_videos=benchmark_videos, seed=seed))
    console.print(f"{result.total} samples under {result.root}", soft_wrap=True)
    console.print(_counts_table(result.samples, "source"))
    for stage, uri in result.mixtures.items():
        console.print(f"stage {stage} mixture: {uri}")
    for task, uri in result.benchmark.items():
        console.print(f"benchmark {task}: {uri}")


@data_app.command("index")
@user_errors
def data_index(
    ctx: typer.Context,
    mixture: Annotated[str, typer.Argument(help="Stage mixture YAML (URI or path).")],
    out: Annotated[str, typer.Option("--out", help="Index folder to write (manifest/, summary.json, ...).")],
    seed: Annotated[int, typer.Option(help="Seed of random:N sampling strategies.")] = 0,
    strict: Annotated[bool, typer.Option("--strict", help="Fail on the first bad record instead of "
                                                           "quarantining it.")] = False,
    check_media: Annotated[bool, typer.Option(help="Check that every media file exists.")] = True,
    rows_per_shard: Annotated[int, typer.Option(help="Manifest rows per Parquet shard.")] = 20_000,
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster to run on (default: a local Ray).")] = None,
    num_cpus: Annotated[int | None, typer.Option(help="CPUs of the local Ray.")] = None,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
) -> None:
    """Validate a stage mixture and write its Parquet manifest (a Ray Data job)."""
    import ray

    from llavast.data.annotations import load_mixture
    from llavast.data.index import build_index

    options = storage_options(endpoint_url, region)
    load_mixture(mixture, options)  # a bad path or YAML fails here, before a Ray cluster starts
    if ray_address:
        ray.init(address=ray_address)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        with console.status(f"indexing {mixture}"):
            summary = build_index(mixture, out, options, seed=seed, strict=strict,
                                  check_media=check_media, rows_per_shard=rows_per_shard)
    finally:
        ray.shutdown()
    console.print(f"{summary['total']} samples indexed into {out}", soft_wrap=True)
    console.print(_counts_table(summary["by_task"], "task"))
    console.print(_counts_table(summary["by_source"], "source"))
    if summary["quarantined"]:
        console.print(f"[yellow]{summary['quarantined']} record(s) quarantined[/yellow] "
                      f"{json.dumps(summary['quarantined_by_reason'])}: see {out}/quarantine.jsonl", soft_wrap=True)


# ---- train ------------------------------------------------------------------------------------------------
@app.command("train")
@user_errors
def train(
    ctx: typer.Context,
    job_yaml: Annotated[str, typer.Argument(help="Stage job YAML (kind: stage).")],
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster to run on (default: a local Ray).")] = None,
    num_cpus: Annotated[int | None, typer.Option(help="CPUs of the local Ray.")] = None,
) -> None:
    """Run one training stage on Ray Train + DeepSpeed; register its artifact in MLflow.

    Running the same YAML again resumes the stage from its latest checkpoint and continues its MLflow run.
    """
    import ray

    from llavast.config.loader import load_stage_job
    from llavast.tracking import check_reachable
    from llavast.train.run import run_stage

    job = load_stage_job(job_yaml)  # a bad YAML or an unreachable MLflow fails here, before Ray starts
    check_reachable(job.tracking.uri, job.tracking.timeout_s)
    if ray_address:
        ray.init(address=ray_address)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        with console.status(f"training stage {job.train.stage} of {job.name}"):
            result = run_stage(job)
    finally:
        ray.shutdown()
    table = Table(show_header=False)
    for key, value in [("run", result.run_name), ("steps", str(result.total_steps)),
                       ("final loss", f"{result.metrics.get('loss', float('nan')):.4f}"),
                       ("artifact", result.artifact_uri), ("MLflow run", result.mlflow_run_id),
                       ("registered", f"models:/{result.model_name}/{result.model_version} (@{job.alias})")]:
        table.add_row(key, value)
    console.print(table)


# ---- services ---------------------------------------------------------------------------------------------
services_app = typer.Typer(no_args_is_help=True, help="Local services for the embedded default.")
app.add_typer(services_app, name="services")


@services_app.command("mlflow")
@user_errors
def services_mlflow(
    ctx: typer.Context,
    state_dir: Annotated[str, typer.Option("--dir", help="Where the sqlite store and artifacts live.")] = ".mlflow",
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
) -> None:
    """Run a local MLflow tracking server (sqlite store) until Ctrl-C."""
    import time
    from pathlib import Path

    from llavast.services import MlflowServer

    server = MlflowServer(state_dir=Path(state_dir), port=port).start()
    console.print(f"MLflow at {server.uri} (state in {state_dir}); Ctrl-C stops it", soft_wrap=True)
    try:
        while server.healthy():
            time.sleep(2)
        errors.print(f"[red]error:[/red] the MLflow server stopped; see {server.log_path}")
        raise typer.Exit(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
