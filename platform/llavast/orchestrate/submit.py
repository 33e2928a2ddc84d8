"""Submitting jobs to a Ray cluster through the Ray Jobs API.

The job ships as a runtime_env: the working dir (the repository, so `jobs/` and the platform's code
travel together), its environment variables (`${env:NAME}` references resolved from the submitter's
environment, never written into the YAML), and pip packages or a requirements file. The entrypoint is
`llavast run <job> ...` on the cluster, so a submitted job runs exactly as a local one.
"""

from __future__ import annotations

import asyncio
import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from llavast.config.compose import ENV_REF
from llavast.errors import ConfigError, LlavastError

EXCLUDES = [".git", ".venv", ".demo", "**/__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache",
            "benchmarks/results"]
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class SubmitError(LlavastError):
    """The Ray Jobs API could not be reached or refused the request."""


def jobs_client(address: str) -> Any:
    """A JobSubmissionClient; it adds Ray's token-auth header itself when token authentication is on."""
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as err:  # connection refused, 401/403, bad address: all surface as generic exceptions
        raise SubmitError(f"cannot reach the Ray Jobs API at {address}: {err}") from err


def _config(job: Any) -> BaseModel:
    return job.config if hasattr(job, "config") and hasattr(job, "jobs") else job


def resolve_env(env_vars: dict[str, str], source: str) -> dict[str, str]:
    """`${env:NAME}` -> this process' $NAME (an unset one is an error naming it); literals pass through."""
    out = {}
    for key, value in env_vars.items():
        if ENV_REF.match(value):
            name = value[len("${env:"):-1]
            if name not in os.environ:
                raise ConfigError(f"{source}: env_vars.{key}: references ${{env:{name}}} but {name} is not set here")
            out[key] = os.environ[name]
        else:
            out[key] = value
    return out


def runtime_env(job: Any, job_file: Path) -> tuple[dict[str, Any], str]:
    """(runtime_env, the job file's path inside the working dir)."""
    config = _config(job)
    working_dir = Path(config.working_dir or Path.cwd()).resolve()
    job_path = job_file.resolve()
    try:
        relative = job_path.relative_to(working_dir)
    except ValueError as err:
        raise ConfigError(f"{job_file}: the job file must be inside the working dir {working_dir} that is "
                          "shipped to the cluster (set working_dir in the YAML)") from err
    env = {"working_dir": str(working_dir), "excludes": EXCLUDES,
           "env_vars": {"PYTHONPATH": "platform:.", **resolve_env(dict(config.env_vars), str(job_file))}}
    if config.pip:
        env["pip"] = list(config.pip)
    elif config.requirements:
        env["pip"] = str((working_dir / config.requirements).resolve())
    return env, relative.as_posix()


def entrypoint(job_path: str, sets: list[str], from_node: str | None, only: str | None) -> str:
    words = ["llavast", "run", job_path]
    for assignment in sets:
        words += ["--set", assignment]
    if from_node:
        words += ["--from", from_node]
    if only:
        words += ["--only", only]
    return shlex.join(words)


def submit_job(client: Any, job: Any, job_file: Path, sets: list[str], *, from_node: str | None = None,
               only: str | None = None, submission_id: str | None = None) -> str:
    env, job_path = runtime_env(job, job_file)
    try:
        return client.submit_job(entrypoint=entrypoint(job_path, sets, from_node, only), runtime_env=env,
                                 submission_id=submission_id, metadata={"llavast.job": _config(job).name})
    except Exception as err:
        raise SubmitError(f"the Ray Jobs API refused {job_file}: {err}") from err


def tail_logs(client: Any, job_id: str, emit: Callable[[str], None]) -> str:
    """Stream a job's logs until it ends; return its final status."""

    async def follow() -> None:
        async for lines in client.tail_job_logs(job_id):
            emit(lines.rstrip("\n"))

    asyncio.run(follow())
    status = client.get_job_status(job_id)
    return str(getattr(status, "value", status))
