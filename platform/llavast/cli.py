"""`llavast`: the command line. Commands are thin wrappers over library functions; this is the only
module that prints for humans. A user-caused error (`LlavastError`) prints as one line and exits 1;
`llavast --debug ...` shows its traceback.

Sub-apps: `data` (synth, index), `eval` (run, score), `services` (up, down), `registry` (list, show);
commands: `validate`, `plan`, `run` (any job kind; a sweep's `--write-best`), `submit`, `status`, `logs`,
`stop`, `demo`. Add others with `app.add_typer(...)`; their user errors are handled by the root command
(`_Root`), nothing to decorate.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from llavast.config.secrets import redact
from llavast.errors import LlavastError
from llavast.services import LOCAL_MLFLOW_PORT, LOCAL_MLFLOW_URI
from llavast.storage import StorageOptions

console = Console()
CHECKOUT = Path(__file__).resolve().parents[2]  # the repository this platform runs from: the demo's home
errors = Console(stderr=True)


class _Root(TyperGroup):
    """The root command: a user error (a LlavastError) from any command is handled here, once: one red line
    (redacted), a failed training run's root-cause report under it, exit 1. `--debug` lets it through with its
    traceback. Anything else is a bug and keeps its traceback."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except LlavastError as exc:
            if ctx.params.get("debug"):
                raise
            errors.print(f"[red]error:[/red] {escape(redact(str(exc)))}", highlight=False, soft_wrap=True)
            failure = getattr(exc, "failure", None)  # a failed training run's root cause (TrainError)
            if failure is not None:
                _print_failure(failure)
            raise typer.Exit(1) from None


app = typer.Typer(cls=_Root, no_args_is_help=True, add_completion=False,
                  help="LLaVA-ST platform: data, training, tracking.")
data_app = typer.Typer(no_args_is_help=True, help="ST-Align: synthesise a dataset, index a stage mixture.")
app.add_typer(data_app, name="data")

EndpointOpt = Annotated[str | None, typer.Option(
    "--endpoint-url", envvar="AWS_ENDPOINT_URL_S3",
    help="S3-compatible endpoint (MinIO, Ceph, ...); credentials come from the AWS credential chain.")]
RegionOpt = Annotated[str | None, typer.Option("--region", envvar="AWS_REGION", help="S3 region.")]
# One name per endpoint: the Ray cluster (GCS / Ray Client) for commands that run work, the dashboard's Jobs API
# for the commands that submit and inspect jobs.
RayAddressOpt = Annotated[str | None, typer.Option(
    "--ray-address", envvar="RAY_ADDRESS", help="Ray cluster to run on (default: start a local Ray).")]


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        import ray
        import torch

        console.print(f"llavast {version('llava-st-platform')} (ray {ray.__version__}, torch {torch.__version__})",
                      highlight=False)
        raise typer.Exit()


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
         verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False,
         version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                               help="Print the platform's version (and Ray's, torch's) and exit.")
                            ] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # MLflow prints a "View run" link (to its GenAI view) at every run's end; the platform prints its own
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # its tqdm bars of each download
    from llavast.train.progress import PROGRESS_LOGGER

    logging.getLogger(PROGRESS_LOGGER).setLevel(logging.INFO)  # stage lines: run links, step / total, ETA


def _run_link(tracking: Any, run_id: str) -> str:
    """A job's MLflow run as a link to it in the UI's training view."""
    from llavast.tracking import Tracker
    from llavast.tracking.client import experiment_url

    return experiment_url(tracking.uri, Tracker(tracking.uri).experiment_id(tracking.experiment), run_id)


def _print_failure(failure: Any, indent: str = "  ") -> None:
    """A failure's full report under its one-line summary: root exception, file:line, where the log is."""
    for line in failure.lines():
        errors.print(indent + escape(redact(line)), highlight=False, soft_wrap=True)


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
def data_synth(
    out: Annotated[str, typer.Option("--out", help="Where to write: s3://bucket/prefix, file:// or a path.")],
    videos: Annotated[int, typer.Option(help="Training videos (each yields 10 samples).")] = 40,
    images: Annotated[int, typer.Option(help="Training images (each yields 4 samples).")] = 20,
    benchmark_videos: Annotated[int, typer.Option(help="Held-out videos for the STVG/ELC/SVG/TVG benchmark.")] = 6,
    benchmark_images: Annotated[int, typer.Option(help="Held-out images for the REC benchmark (0: none).")] = 6,
    num_frames: Annotated[int, typer.Option(min=1, help="Frames per video of the model the data is for (the tiny "
                                                        "model's 4): tubes have boxes on the frames it samples.")] = 4,
    single_images: Annotated[int, typer.Option(min=0, help="Training images of one shape, 5-20 px half-size (each "
                                                           "yields 2 samples): the spatial warm-up.")] = 0,
    single_videos: Annotated[int, typer.Option(min=0, help="Training videos of one moving shape, 8-16 px half-size "
                                                           "(each yields 2 samples): the video warm-up.")] = 0,
    seed: Annotated[int, typer.Option(help="Same seed (and num_frames), same bytes.")] = 0,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
) -> None:
    """Write a synthetic ST-Align (mp4 videos, images, annotations, stage mixtures, benchmark)."""
    from llavast.data.synth import SynthSpec, synthesize

    with console.status("synthesising videos and annotations"):
        result = synthesize(out, storage_options(endpoint_url, region),
                            SynthSpec(videos=videos, images=images, benchmark_videos=benchmark_videos,
                                      benchmark_images=benchmark_images, num_frames=num_frames,
                                      single_images=single_images, single_videos=single_videos, seed=seed))
    console.print(f"{result.total} samples under {result.root}", soft_wrap=True)
    console.print(_counts_table(result.samples, "source"))
    for stage, uri in result.mixtures.items():
        console.print(f"{f'stage {stage}' if isinstance(stage, int) else stage} mixture: {uri}")
    for task, uri in result.benchmark.items():
        console.print(f"benchmark {task}: {uri}")


@data_app.command("index")
def data_index(
    mixture: Annotated[str, typer.Argument(help="Stage mixture YAML (URI or path).")],
    out: Annotated[str, typer.Option("--out", help="Index folder to write (manifest/, summary.json, ...).")],
    seed: Annotated[int, typer.Option(help="Seed of random:N sampling strategies.")] = 0,
    strict: Annotated[bool, typer.Option("--strict", help="Fail on the first bad record instead of "
                                                           "quarantining it.")] = False,
    check_media: Annotated[bool, typer.Option(help="Check that every media file exists.")] = True,
    rows_per_shard: Annotated[int, typer.Option(min=1, help="Manifest rows per Parquet shard.")] = 20_000,
    validation: Annotated[str, typer.Option(help="release: repair what the authors' release accepts (counted); "
                                                 "strict: quarantine it.")] = "release",
    ray_address: RayAddressOpt = None,
    num_cpus: Annotated[int | None, typer.Option(help="CPUs of the local Ray.")] = None,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
) -> None:
    """Validate a stage mixture and write its Parquet manifest (a Ray Data job)."""
    import ray

    from llavast.data.annotations import load_mixture
    from llavast.data.index import build_index
    from llavast.data.validate import VALIDATIONS

    if validation not in VALIDATIONS:  # before Ray starts, as every other bad input
        raise typer.BadParameter(f"{validation!r} is not one of {', '.join(VALIDATIONS)}", param_hint="--validation")
    options = storage_options(endpoint_url, region)
    load_mixture(mixture, options)  # a bad path or YAML fails here, before a Ray cluster starts
    _start_ray(ray_address, num_cpus)
    try:
        with console.status(f"indexing {mixture}"):
            summary = build_index(mixture, out, options, seed=seed, strict=strict, check_media=check_media,
                                  rows_per_shard=rows_per_shard, validation=validation)
    finally:
        ray.shutdown()
    console.print(f"{summary['total']} samples indexed into {out}", soft_wrap=True)
    console.print(_counts_table(summary["by_task"], "task"))
    console.print(_counts_table(summary["by_source"], "source"))
    tolerated = {name: n for name, n in summary["tolerated"].items() if n}
    if tolerated:
        console.print(f"[yellow]kept with the release's tolerances[/yellow] {json.dumps(tolerated)} "
                      "(--validation strict quarantines them)", soft_wrap=True)
    if summary["quarantined"]:
        console.print(f"[yellow]{summary['quarantined']} record(s) quarantined[/yellow] "
                      f"{json.dumps(summary['quarantined_by_reason'])}: see {out}/quarantine.jsonl", soft_wrap=True)


# ---- services ---------------------------------------------------------------------------------------------
services_app = typer.Typer(no_args_is_help=True, help="Local services for the embedded default.")
app.add_typer(services_app, name="services")


# ---- jobs: validate, plan, run ---------------------------------------------------------------------------
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a value: key.path=value (repeatable).")]
FromOpt = Annotated[str | None, typer.Option("--from", help="Re-run this node and everything downstream.")]
OnlyOpt = Annotated[str | None, typer.Option("--only", help="Run only this node (its inputs must exist).")]
REASON_CHARS = 64  # a failed or blocked node's reason in the nodes table
STATUS_STYLE = {"succeeded": "green", "skipped": "cyan", "failed": "red", "blocked": "yellow", "pending": "white",
                "running": "magenta"}


def _load(job_file: Path, sets: list[str] | None) -> Any:
    from llavast.config.loader import load_job

    return load_job(job_file, sets or [])


WAIT_TIMEOUT_S = 6 * 3600.0  # `llavast run --wait-timeout`: longer than a stage of the paper's recipe takes


def _env_vars_by_source(job: Any, job_file: Path) -> dict[str, dict[str, str]]:
    """The `env_vars` of a job, or of a pipeline and each of its nodes, keyed by where they come from."""
    if job.kind != "pipeline":
        return {str(job_file): job.env_vars}
    return {str(job_file): job.config.env_vars,
            **{f"{job_file} node {name}": node_job.env_vars for name, node_job in job.jobs.items()}}


def _resources(needs: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in sorted(needs.items()) if not k.startswith("accelerator_type")) + (
        "".join(f", {k.split(':', 1)[1]}" for k in needs if k.startswith("accelerator_type")))


def _nodes_table(pipeline: Any, results: dict[str, Any] | None = None, title: str | None = None) -> Table:
    from llavast.orchestrate.pipeline import pipeline_nodes

    table = Table(title=title)
    for column in ("node", "kind", "depends on", "resources", "status", "output", "details"):
        table.add_column(column, overflow="fold")
    for node in pipeline_nodes(pipeline):
        result = (results or {}).get(node.name)
        status = result.status.value if result else "-"
        details = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                            for k, v in (result.details if result else {}).items() if v is not None and k != "run_id")
        if result and result.error:  # a short reason; a failed node's full report is printed below the table
            reason = redact(result.error)  # before cutting: a cut URL would hide its password from redact
            details = reason if len(reason) <= REASON_CHARS else reason[:REASON_CHARS - 1] + "…"
        table.add_row(node.name, node.spec.kind, ", ".join(node.depends_on) or "-", _resources(dict(node.resources)),
                      f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]",
                      escape((result.output or "-") if result else "-"),
                      escape(details + (f" ({result.seconds:.0f}s)" if result and result.seconds else "")))
    return table


@app.command("validate")
def validate(job_file: Annotated[Path, typer.Argument(help="Job YAML.")],
             set_: SetOpt = None) -> None:
    """Check a job YAML (and, for a pipeline, every node's job and the graph) without running anything."""
    job = _load(job_file, set_)
    if job.kind == "pipeline":
        console.print(f"[green]ok[/green] pipeline {job.name}: {len(job.jobs)} nodes")
        console.print(_nodes_table(job))
    else:
        console.print(f"[green]ok[/green] {job.kind} job {job.name}")


@app.command("plan")
def plan(job_file: Annotated[Path, typer.Argument(help="Job YAML.")], set_: SetOpt = None,
         from_node: FromOpt = None, only: OnlyOpt = None,
         offline: Annotated[bool, typer.Option(help="Do not ask MLflow/storage what already exists.")] = False
         ) -> None:
    """What would run and what would be skipped, and the resources each node needs."""
    from llavast.errors import LlavastError
    from llavast.orchestrate.pipeline import pipeline_nodes, run_pipeline

    job = _load(job_file, set_)
    if job.kind == "sweep":
        _plan_sweep(job)
        return
    if job.kind != "pipeline":
        from llavast.config.resources import job_resources

        console.print(f"{job.kind} job {job.name}: needs {_resources(job_resources(job))}")
        return
    from llavast.orchestrate.dag import forced_nodes

    forced_nodes(pipeline_nodes(job), from_node, only)  # a --from/--only that names no node: an error, not a plan
    results = None
    if not offline:
        try:
            results = run_pipeline(job, from_node=from_node, only=only, dry_run=True)
        except LlavastError as err:
            errors.print(f"[yellow]cannot tell what exists ({err}); showing the graph and resources only[/]",
                         soft_wrap=True)
    console.print(_nodes_table(job, results, title=f"plan: {job.name}"))
    peak: dict[str, float] = {}
    for node in pipeline_nodes(job):
        for key, value in node.resources.items():
            peak[key] = max(peak.get(key, 0.0), value)
    console.print(f"largest node needs: {_resources(peak)} (independent nodes may run at once, "
                  f"up to max_parallel={job.config.max_parallel})")


def _rows_table(rows: list[dict[str, Any]], title: str | None = None) -> Table:
    table = Table(title=title)
    for column in rows[0] if rows else []:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()))
    return table


def _plan_sweep(job: Any) -> None:
    """The valid space (tokens per video, vs the paper's 2,520, activation estimate), what was removed and why,
    and how many trials run at once on this machine's CPUs."""
    import os

    from llavast.tune.plan import plan_sweep

    plan = plan_sweep(job, {"CPU": float(os.cpu_count() or 1)})
    console.print(_rows_table(plan.rows, title=f"sweep {job.name}: {len(plan.space.valid)} valid point(s)"))
    removed = plan.space.removed_by_reason()
    console.print(f"removed {len(plan.space.removed)} point(s)" + (": " + "; ".join(
        f"{reason}: {n}" for reason, n in removed.items()) if removed else ""), highlight=False)
    if plan.space.ranges:
        console.print("ranges: " + ", ".join(f"{k} {kind}[{lo:g}, {hi:g}]" for k, (kind, lo, hi)
                                             in plan.space.ranges.items()), highlight=False)
    console.print(f"{plan.trials} trial(s) of {plan.max_steps} steps ({job.search.algorithm} search, "
                  f"{job.scheduler.kind} scheduler); one trial needs {_resources(plan.per_trial)}; "
                  f"at once here: {plan.concurrency}", highlight=False)


def _run_sweep(job: Any, write_best: Path | None) -> None:
    """A sweep, with its progress on one status line, then the trials table, best first."""
    from llavast.tune.best import best_parameters
    from llavast.tune.best import write_best as write
    from llavast.tune.sweep import run_sweep
    from llavast.tune.tuner import PROGRESS_LOGGER

    with console.status(f"sweep {job.name}: starting") as status:
        class _Status(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                status.update(f"sweep {job.name}: {record.getMessage()}")

        handler, progress = _Status(logging.INFO), logging.getLogger(PROGRESS_LOGGER)
        progress.addHandler(handler)
        progress.setLevel(logging.INFO)
        try:
            result = run_sweep(job)
        finally:
            progress.removeHandler(handler)
    console.print(_rows_table(result.trials, title=f"sweep {job.name}: {len(result.trials)} trial(s), best first"))
    console.print(f"[green]done[/green] sweep {job.name}: best trial {result.best['trial_id']}, "
                  f"{job.objective_metric} = {result.best['objective']:.4g} ({result.best_uri})", highlight=False)
    if write_best is not None:
        loaded = write(job, result.best, best_parameters(result.best), write_best)
        console.print(f"best parameters written to {write_best} ({loaded.kind} job {loaded.name})", highlight=False)


def _start_ray(address: str | None, num_cpus: int | None = None) -> dict[str, float]:
    """Connect to the cluster at `address`, or start a private local Ray; return the cluster's resources."""
    import ray

    quiet = not logging.getLogger().isEnabledFor(logging.INFO)  # --verbose shows Ray's own progress logs
    if address:
        ray.init(address=address, log_to_driver=not quiet, logging_level=logging.WARNING if quiet else logging.INFO)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=not quiet,
                 logging_level=logging.WARNING if quiet else logging.INFO)
    if quiet:
        ray.data.DataContext.get_current().enable_progress_bars = False
        for name in ("ray.data", "ray.train", "ray.tune"):
            logging.getLogger(name).setLevel(logging.WARNING)
    return {k: float(v) for k, v in ray.cluster_resources().items()}


def _run_pipeline_live(job: Any, capacity: dict[str, float] | None, from_node: str | None, only: str | None,
                       wait_s: float) -> dict[str, Any]:
    from rich.live import Live

    from llavast.orchestrate.dag import NodeResult, Status
    from llavast.orchestrate.pipeline import run_pipeline

    results: dict[str, NodeResult] = {}
    with Live(_nodes_table(job, results, title=f"running {job.name}"), console=console, refresh_per_second=2,
              transient=False) as live:
        def update(result: NodeResult) -> None:
            results[result.name] = result
            live.update(_nodes_table(job, results, title=f"running {job.name}"))

        final = run_pipeline(job, capacity=capacity, from_node=from_node, only=only, on_update=update, wait_s=wait_s)
    for name, result in final.items():
        if result.failure is not None:
            errors.print(f"[red]{name} failed:[/red]", highlight=False)
            _print_failure(result.failure)
    failed = [n for n, r in final.items() if r.status in (Status.FAILED, Status.BLOCKED)]
    if failed:
        errors.print(f"[red]{len(failed)} node(s) did not succeed: {', '.join(failed)}[/red]; fix the cause and run "
                     "the same command again: finished nodes are skipped, interrupted stages resume")
        raise typer.Exit(1)
    return final


@app.command("run")
def run(job_file: Annotated[Path, typer.Argument(help="Job YAML (any kind: stage, eval, pipeline, ...).")],
        set_: SetOpt = None, from_node: FromOpt = None, only: OnlyOpt = None, ray_address: RayAddressOpt = None,
        num_cpus: Annotated[int | None, typer.Option(help="CPUs of a local Ray (default: all).")] = None,
        write_best: Annotated[Path | None, typer.Option(
            "--write-best", help="A sweep: write its best trial's parameters to this job YAML.")] = None,
        wait_timeout: Annotated[float, typer.Option(
            min=0, help="Seconds to wait for a node or stage that another runner holds (then skip it if that runner "
                        "made it, or run it).")] = WAIT_TIMEOUT_S,
        no_wait: Annotated[bool, typer.Option("--no-wait", help="Refuse a held node at once.")] = False) -> None:
    """Run a job (a stage, a pipeline, synth, index, eval or sweep) on the Ray cluster at --ray-address (or
    $RAY_ADDRESS), or on a local Ray this command starts. Running the same job again skips what is done and resumes
    the rest; a node another runner holds is waited for."""
    import ray

    from llavast.config.secrets import check_env_set

    job = _load(job_file, set_)
    if write_best is not None and job.kind != "sweep":
        raise typer.BadParameter(f"--write-best applies to a sweep, not a {job.kind} job")
    check_env_set(_env_vars_by_source(job, job_file), os.environ)  # every unset reference, before Ray starts
    if job.kind == "stage":  # its references fail here in one line, before Ray starts
        from llavast.train.preflight import preflight

        with console.status("checking MLflow, the base model, the manifest, init_from and the storage root"):
            preflight(job)
    capacity = _start_ray(ray_address, num_cpus)
    try:
        if job.kind == "pipeline":
            _run_pipeline_live(job, capacity, from_node, only, 0.0 if no_wait else wait_timeout)
            return
        if job.kind == "sweep":
            _run_sweep(job, write_best)
            return
        from llavast.orchestrate.dag import Node
        from llavast.orchestrate.executors import KindExecutor, NodeWait

        node = Node(job.name, (), job)  # one job runs as a one-node pipeline: fingerprinted and registered alike
        executor = KindExecutor(wait=NodeWait(0.0 if no_wait else wait_timeout))
        with console.status(f"running {job.kind} job {job.name}"):
            result = executor.run(node, {}, executor.fingerprint(node, {}))
    finally:
        ray.shutdown()
    table = Table(show_header=False)
    for key, value in result.details.items():
        if value is not None:
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    alias = f" (@{job.alias})" if job.kind == "stage" else ""
    table.add_row("output", f"{result.output}{alias}")
    tracking = getattr(job, "tracking", None)
    if result.details.get("run_id") and tracking is not None:
        table.add_row("MLflow", _run_link(tracking, result.details["run_id"]))
    console.print(f"[green]done[/green] {job.kind} {job.name}", highlight=False)
    console.print(table)


# ---- Ray Jobs: submit, status, logs, stop -----------------------------------------------------------------
JobsAddressOpt = Annotated[str, typer.Option(
    "--jobs-address", envvar="RAY_API_SERVER_ADDRESS",
    help="The Ray dashboard (Jobs API), e.g. http://127.0.0.1:8265. With token authentication, set "
         "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or the token file) as for the ray CLI.")]


def _print_log_line(line: str) -> None:
    console.print(line, markup=False, highlight=False, soft_wrap=True)


def _jobs_api(address: str) -> Any:
    from llavast.orchestrate.submit import JobsApi

    return JobsApi(address)


def _follow(api: Any, job_id: str) -> str:
    """Tail a job's logs until it ends; Ctrl-C stops following, not the job."""
    try:
        return api.follow(job_id, _print_log_line)
    except KeyboardInterrupt:
        errors.print(f"stopped following {job_id}; it keeps running (stop it with: llavast stop {job_id} "
                     f"--jobs-address {api.address})", soft_wrap=True)
        raise typer.Exit(130) from None


@app.command("submit")
def submit(job_file: Annotated[Path, typer.Argument(help="Job YAML (any kind: stage, pipeline, ...).")],
           address: JobsAddressOpt, set_: SetOpt = None, from_node: FromOpt = None, only: OnlyOpt = None,
           follow: Annotated[bool, typer.Option("--follow", "-f", help="Tail the logs until the job ends.")] = False,
           submission_id: Annotated[str | None, typer.Option(help="Id for the Ray job (default: generated).")] = None
           ) -> None:
    """Submit a job to a Ray cluster through the Jobs API, with the working dir and requirements as runtime_env.

    The YAML is validated (and its ${env:NAME} references resolved) before the cluster is contacted; with
    --follow the command exits 0 only when the job SUCCEEDED.
    """
    from llavast.orchestrate.submit import prepare

    submission = prepare(_load(job_file, set_), job_file, set_ or [], from_node=from_node, only=only)
    api = _jobs_api(address)
    job_id = api.submit(submission, submission_id)
    console.print(f"submitted {job_id} to {address}; follow it with: llavast logs {job_id} --jobs-address {address} "
                  "--follow", soft_wrap=True, highlight=False)
    if follow:
        status = _follow(api, job_id)
        console.print(f"{job_id}: {status}", highlight=False)
        if status != "SUCCEEDED":
            reason = redact(api.info(job_id).message or "").strip().splitlines()
            errors.print(f"[red]{job_id} {status}[/red]: {escape(reason[0] if reason else 'no message from Ray')}",
                         highlight=False, soft_wrap=True)
            errors.print(f"  full log: llavast logs {job_id} --jobs-address {address}", highlight=False, soft_wrap=True)
            raise typer.Exit(1)


def _duration(info: Any) -> str:
    """How long the job ran (Ray reports epoch milliseconds), or that it still runs."""
    if not info.start_time:
        return "-"
    return f"{(info.end_time - info.start_time) / 1000:.0f}s" if info.end_time else "running"


@app.command("status")
def status(address: JobsAddressOpt,
           job_id: Annotated[str | None, typer.Argument(help="A job id (default: list all jobs).")] = None) -> None:
    """The status of one Ray job, or a table of all of them (oldest first)."""
    api = _jobs_api(address)
    jobs = [api.info(job_id)] if job_id else api.jobs()
    table = Table()
    for column in ("job", "status", "time", "entrypoint", "message"):
        table.add_column(column, overflow="fold")
    for info in sorted(jobs, key=lambda j: j.start_time or 0):
        status = str(getattr(info.status, "value", info.status))
        table.add_row(escape(info.submission_id or info.job_id or "-"),
                      f"[{STATUS_STYLE.get(status.lower(), 'white')}]{status}[/]", _duration(info),
                      escape(info.entrypoint or ""), escape(info.message or ""))
    console.print(table)


@app.command("logs")
def logs(job_id: Annotated[str, typer.Argument(help="The job id.")], address: JobsAddressOpt,
         follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep tailing until the job ends.")] = False
         ) -> None:
    """A Ray job's logs (the output of `llavast run` on the cluster: Ray Train's and the stage's lines)."""
    api = _jobs_api(address)
    if follow:
        console.print(f"{job_id}: {_follow(api, job_id)}", highlight=False)
    else:
        console.print(api.logs(job_id), end="", highlight=False, markup=False, soft_wrap=True)


@app.command("stop")
def stop(job_id: Annotated[str, typer.Argument(help="The job id.")],
         address: JobsAddressOpt) -> None:
    """Stop a running Ray job (a stopped stage resumes from its latest checkpoint when run again)."""
    stopped = _jobs_api(address).stop(job_id)
    console.print(f"{job_id}: {'stop requested' if stopped else 'was not running'}", highlight=False)


# ---- registry -----------------------------------------------------------------------------------------------
registry_app = typer.Typer(no_args_is_help=True, help="Registered stage artifacts: versions, aliases, lineage.")
app.add_typer(registry_app, name="registry")
TrackingOpt = Annotated[str, typer.Option("--tracking-uri", envvar="MLFLOW_TRACKING_URI",
                                          help="The MLflow server (default: the one `llavast services up` and "
                                               "`make demo` start).")]


@registry_app.command("list")
def registry_list(tracking_uri: TrackingOpt = LOCAL_MLFLOW_URI,
                  model: Annotated[str | None, typer.Argument(help="A registered model (default: all).")] = None
                  ) -> None:
    """Registered models, or one model's versions with their aliases and lineage."""
    from llavast.tracking import Tracker, tags
    from llavast.tracking.catalog import list_models, list_versions

    tracker = Tracker(tracking_uri)
    if model is None:
        table = Table("registered model", "versions", "aliases")
        for name in list_models(tracker):
            versions = list_versions(tracker, name)
            aliases = sorted({f"{a}->v{v.version}" for v in versions for a in v.aliases})
            table.add_row(name, str(len(versions)), ", ".join(aliases))
        console.print(table)
        return
    table = Table(title=model)
    for column in ("version", "aliases", "stage", "parent", "fingerprint", "source"):
        table.add_column(column, overflow="fold")
    for v in list_versions(tracker, model):
        table.add_row(v.version, ", ".join(v.aliases), v.tags.get(tags.STAGE, ""),
                      v.tags.get(tags.PARENT_VERSION, ""), v.tags.get(tags.FINGERPRINT, "")[:12], v.source)
    console.print(table)


@registry_app.command("show")
def registry_show(ref: Annotated[str, typer.Argument(
                  help="models:/<name>@<alias> or models:/<name>/<version>")],
                  tracking_uri: TrackingOpt = LOCAL_MLFLOW_URI) -> None:
    """One version: source, run, aliases, every tag (lineage, fingerprint)."""
    from llavast.tracking import Tracker, resolve_init_from
    from llavast.tracking.catalog import list_versions

    tracker = Tracker(tracking_uri)
    resolved = resolve_init_from(ref, tracker)
    if resolved.model_name is None:
        raise typer.BadParameter(f"{ref} is not a models:/ reference")
    info = next(v for v in list_versions(tracker, resolved.model_name) if v.version == resolved.version)
    table = Table(title=f"{info.model} version {info.version}", show_header=False)
    table.add_column("key")
    table.add_column("value", overflow="fold")
    for key, value in [("source", info.source), ("run", info.run_id or ""), ("aliases", ", ".join(info.aliases)),
                       *sorted(info.tags.items())]:
        table.add_row(key, value)
    console.print(table)


# ---- evaluation ---------------------------------------------------------------------------------------------
class _EvalGroup(TyperGroup):
    """`llavast eval EVAL.yaml` is `llavast eval run EVAL.yaml`: a first argument that is not a subcommand is a
    job file."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["run", *args]
        return super().parse_args(ctx, args)


eval_app = typer.Typer(cls=_EvalGroup, no_args_is_help=True,
                       help="Evaluate: `llavast eval EVAL.yaml` runs an eval job; `llavast eval score` scores any "
                            "model's answers.")
app.add_typer(eval_app, name="eval")
TaskOpt = Annotated[str, typer.Option("--task", help="stvg, svg, elc (ST-Align), tvg (Charades-STA) or rec "
                                                     "(RefCOCO/+/g).")]


def _metric_table(summary: dict[str, dict[str, float | int]], title: str | None = None) -> Table:
    """Tasks as columns, metric keys as rows (percent; `count` a number; "-" where a task has no such key)."""
    table = Table(title=title)
    table.add_column("metric")
    for name in summary:
        table.add_column(name, justify="right")
    keys = list(dict.fromkeys(k for metrics in summary.values() for k in metrics if k not in ("parse_rate", "count")))
    keys += ["parse_rate", "count"]
    for key in keys:
        cells = [summary[name].get(key) for name in summary]
        table.add_row(key, *("-" if v is None else str(v) if isinstance(v, int) else f"{v:.2f}" for v in cells))
    return table


@eval_app.command("run")
def eval_run(job_file: Annotated[Path, typer.Argument(help="Eval job YAML (kind: eval).")],
             set_: SetOpt = None,
             limit: Annotated[int | None, typer.Option(help="Only the first N samples of each benchmark.")] = None,
             ray_address: RayAddressOpt = None,
             num_cpus: Annotated[int | None, typer.Option(help="CPUs of a local Ray (default: all).")] = None
             ) -> None:
    """Answer every benchmark of the job with its model (Ray Data inference), score, write results and log them.

    Always evaluates; `llavast run EVAL.yaml` (and a pipeline's eval node) skips an evaluation whose results
    exist for the same job and model.
    """
    import ray
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from llavast.evaluate.job import run_eval_job

    job = _load(job_file, [*(set_ or []), *([f"generation.limit={limit}"] if limit else [])])
    if job.kind != "eval":
        from llavast.errors import ConfigError

        raise ConfigError(f"{job_file}: kind: expected 'eval', got {job.kind!r} (`llavast run` runs any kind)")
    _start_ray(ray_address, num_cpus)
    try:
        with Progress(TextColumn("answering"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=False) as progress:
            bar = progress.add_task("answering", total=None)
            result = run_eval_job(job, on_progress=lambda done, total: progress.update(bar, completed=done,
                                                                                       total=total))
    finally:
        ray.shutdown()
    console.print(_metric_table(result.run.summary(), title=f"{job.name}: metrics (%)"))
    console.print(f"results: {job.out} (summary.json, run.json, <benchmark>/<task>/results.parquet)", soft_wrap=True)
    if result.mlflow_run_id:
        version = f"; tagged version {result.run.source.version}" if result.run.source.version else ""
        console.print(f"MLflow run {_run_link(job.tracking, result.mlflow_run_id)} in {job.tracking.experiment}"
                      f"{version}", soft_wrap=True)


@eval_app.command("score")
def eval_score(
    task: TaskOpt,
    benchmark: Annotated[str, typer.Option("--benchmark", help="The benchmark file (URI or path).")],
    predictions: Annotated[str, typer.Option("--predictions", help='JSONL of {"id", "output"} (URI or path).')],
    out: Annotated[str, typer.Option("--out", help="Folder for summary.json and results.parquet.")],
    num_coordinate_bins: Annotated[int, typer.Option(
        "--num-coordinate-bins", min=2, help="M, the coordinate tokens per axis the answers were written with.")] = 100,
    num_frames: Annotated[int, typer.Option(
        "--num-frames", min=1, help="N, the frames the model sampled per video (ST-Align's sIoU/vIoU frames).")] = 100,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
) -> None:
    """Score a predictions file against a benchmark with this platform's metrics (baselines, other models)."""
    from llavast import storage
    from llavast.evaluate.answers import check_task
    from llavast.evaluate.benchmarks import read_benchmark
    from llavast.evaluate.score import check_prediction_ids, read_predictions, score

    options = storage_options(endpoint_url, region)
    try:
        task = check_task(task)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--task") from None
    file = read_benchmark(task, benchmark, options)
    if not file.samples:  # e.g. a TVG file scored as STVG: nothing of this task in it
        raise typer.BadParameter(f"{benchmark} holds no {task} sample (quarantined: "
                                 f"{file.quarantined_by_reason or 'none'}): is it a {task} benchmark file?",
                                 param_hint="--benchmark")
    outputs = read_predictions(storage.read_text(predictions, options), predictions)
    if not outputs:
        raise typer.BadParameter(f"{predictions} holds no prediction", param_hint="--predictions")
    check_prediction_ids(outputs, file, predictions)
    if file.quarantined:
        errors.print(f"[yellow]{len(file.quarantined)} benchmark record(s) quarantined, not scored: "
                     f"{file.quarantined_by_reason}[/yellow]")
    scored = score(task, file.samples, outputs, num_coordinate_bins, num_frames)
    storage.write_parquet(storage.join(out, "results.parquet"), scored.rows, options)
    storage.write_text(storage.join(out, "summary.json"), json.dumps({task: scored.summary}, indent=2), options)
    missing = sum(1 for r in scored.rows if r["parse_status"] == "missing")
    if missing:
        errors.print(f"[yellow]{missing} sample(s) have no prediction: scored as misses[/yellow]")
    console.print(_metric_table({task: scored.summary}, title="metrics (%)"))
    console.print(f"wrote {storage.join(out, 'summary.json')}", soft_wrap=True)


# ---- services -----------------------------------------------------------------------------------------------
StateOpt = Annotated[Path, typer.Option("--state-dir", help="Where the MLflow server keeps its sqlite store, "
                                                             "artifacts, log and pid file.")]
PortOpt = Annotated[int, typer.Option("--port", help="MLflow server port on 127.0.0.1 (the demo jobs use "
                                                   f"{LOCAL_MLFLOW_PORT}).")]


@services_app.command("up")
def services_up(state_dir: StateOpt = CHECKOUT / ".demo" / "mlflow", port: PortOpt = LOCAL_MLFLOW_PORT,
                foreground: Annotated[bool, typer.Option("--foreground", help="Run in this terminal until Ctrl-C "
                                                                              "instead of in the background.")] = False
                ) -> None:
    """Start a local MLflow server (sqlite store): in the background (idempotent; it outlives this command),
    or with --foreground until Ctrl-C."""
    from llavast.services import MlflowServer, mlflow_up

    if foreground:
        server = MlflowServer(state_dir=state_dir, port=port).start()
        console.print(f"MLflow at {server.uri} (state in {state_dir}); Ctrl-C stops it", soft_wrap=True)
        try:
            while server.healthy():
                time.sleep(2)
            errors.print(f"[red]error:[/red] the MLflow server stopped; see {server.log_path}")
            raise typer.Exit(1)
        except KeyboardInterrupt:
            return
        finally:
            server.stop()
    with console.status("starting the MLflow server"):
        uri, started = mlflow_up(state_dir, port)
    console.print(f"MLflow {'started' if started else 'already running'} at {uri} (UI: open it in a browser; "
                  f"stop it with `llavast services down --state-dir {state_dir}`)", soft_wrap=True)


@services_app.command("down")
def services_down(state_dir: StateOpt = CHECKOUT / ".demo" / "mlflow") -> None:
    """Stop the local MLflow server started by `services up` (its runs and models stay in --state-dir)."""
    from llavast.services import mlflow_down

    console.print("MLflow server stopped" if mlflow_down(state_dir) else "no MLflow server was running")


# ---- the embedded default -----------------------------------------------------------------------------------
@app.command("demo")
def demo(pipeline_file: Annotated[Path | None, typer.Option(
             "--pipeline", help="The demo pipeline (default: jobs/demo/pipeline.yaml of this checkout).")] = None,
         mlflow_dir: Annotated[Path | None, typer.Option(
             help="State of the local MLflow server (default: .demo/mlflow of this checkout).")] = None,
         num_cpus: Annotated[int, typer.Option(help="Logical CPUs of the local Ray.")] = 4) -> None:
    """The whole pipeline on embedded defaults: tiny model, synthetic data, local Ray, local MLflow.

    Builds the tiny base checkpoint where the stage jobs expect it, starts MLflow on the pipeline's tracking
    port, runs the pipeline (finished nodes are skipped on a second run) and prints a summary per stage. Runs
    from any folder: the defaults are the checkout's own.
    """
    import ray

    import model_zoo
    from llavast.services import mlflow_up

    pipeline_file = pipeline_file or CHECKOUT / "jobs" / "demo" / "pipeline.yaml"
    mlflow_dir = mlflow_dir or CHECKOUT / ".demo" / "mlflow"
    job = _load(pipeline_file, [])
    if job.kind != "pipeline" or job.config.tracking is None:
        raise typer.BadParameter(f"{pipeline_file} must be a pipeline with a tracking section")
    url = urlparse(job.config.tracking.uri)
    if url.hostname not in ("127.0.0.1", "localhost") or url.port is None:
        raise typer.BadParameter(f"the demo starts MLflow locally: tracking.uri must be http://127.0.0.1:<port>, "
                                 f"got {job.config.tracking.uri}")
    for model, base in sorted({(j.model.name, j.model.base) for j in job.jobs.values() if j.kind == "stage"}):
        if not (Path(base) / "config.json").is_file():
            with console.status(f"building the demo base checkpoint of {model} in {base}"):
                model_zoo.spec(model).write_demo_checkpoint(base)
    with console.status("starting the MLflow server"):
        uri, _ = mlflow_up(mlflow_dir, url.port)
    capacity = _start_ray(None, num_cpus)
    try:
        results = _run_pipeline_live(job, capacity, None, None, WAIT_TIMEOUT_S)
    finally:
        ray.shutdown()
    summary = Table(title="LLaVA-ST demo: stages")
    for column in ("stage", "status", "steps", "final loss", "registered version", "time"):
        summary.add_column(column)
    for name, result in results.items():
        if job.jobs[name].kind != "stage":
            continue
        d = result.details
        summary.add_row(name, result.status.value, str(d.get("steps", "-")),
                        f"{d['loss']:.4f}" if isinstance(d.get("loss"), float) else "-",
                        result.output or "-", f"{result.seconds:.0f}s" if result.seconds else "skipped")
    console.print(summary)
    for name, result in results.items():  # the eval nodes' tables, from their results (a skipped node's too)
        job_of = job.jobs[name]
        if job_of.kind == "eval" and result.output:
            from llavast import storage

            tables = json.loads(storage.read_text(storage.join(result.output, "summary.json"), job_of.storage))
            evaluated = job_of.model.version or job_of.model.base
            if evaluated.startswith("node:"):
                evaluated = results[evaluated.removeprefix("node:")].output
            console.print(f"LLaVA-ST demo: {name} of {evaluated} (metrics in %, results in {result.output})",
                          soft_wrap=True)
            console.print(_metric_table(tables))
    if any(job.jobs[name].kind == "eval" for name in results):
        console.print("These scores are near zero by design: the demo's tiny model trains a few steps, to show the "
                      "platform end to end. `make learn` trains one that learns what the benchmarks ask "
                      "(docs/results.md).", soft_wrap=True)
    from llavast.tracking import Tracker
    from llavast.tracking.client import experiment_url

    experiment = job.config.tracking.experiment
    console.print(f"MLflow UI: {experiment_url(uri, Tracker(uri).experiment_id(experiment))}  (experiment "
                  f"{experiment}); stop the server with `llavast services down --state-dir {mlflow_dir}`",
                  soft_wrap=True)
