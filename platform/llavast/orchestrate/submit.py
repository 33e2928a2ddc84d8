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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from llavast.config.secrets import referenced_names, resolve_env
from llavast.errors import ConfigError, LlavastError

EXCLUDES = [".git", ".venv", ".demo", ".learn", "**/__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache",
            "benchmarks/results"]


@dataclass(frozen=True)
class Submission:
    """What goes to the cluster: built (and every ${env:...} resolved) before the cluster is contacted."""

    source: Path
    name: str
    entrypoint: str
    runtime_env: dict[str, Any]


def prepare(job: Any, job_file: Path, sets: list[str], *, from_node: str | None = None,
            only: str | None = None) -> Submission:
    env, job_path = runtime_env(job, job_file)
    return Submission(source=job_file, name=_config(job).name, runtime_env=env,
                      entrypoint=entrypoint(job_path, sets, from_node, only))


class SubmitError(LlavastError):
    """The Ray Jobs API could not be reached, refused the request, or does not know the job."""


class JobsApi:
    """The Ray Jobs API of one cluster (its dashboard address), for submit, status, logs and stop.

    Every failure becomes a SubmitError naming the call, the job and the address: the Ray client raises
    bare RuntimeErrors and connection errors, which the CLI would otherwise show as tracebacks. The client
    adds Ray's token-auth header itself when RAY_AUTH_MODE=token (the token from RAY_AUTH_TOKEN, the file
    at RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token).
    """

    def __init__(self, address: str) -> None:
        from ray.job_submission import JobSubmissionClient

        self.address = address
        try:
            self.client = JobSubmissionClient(address)
        except Exception as err:  # connection refused, 401/403, bad address, version mismatch
            raise SubmitError(f"cannot reach the Ray Jobs API at {address}: {err}") from err

    def _call(self, what: str, job_id: str | None, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            if job_id is not None and "status code 404" in str(err):  # the Jobs API's answer to an unknown id
                raise SubmitError(f"no job {job_id!r} on the cluster at {self.address} (list its jobs with "
                                  f"`llavast status --jobs-address {self.address}`)") from err
            raise SubmitError(f"{what} failed at the Ray Jobs API {self.address}: {err}") from err

    def submit(self, submission: Submission, submission_id: str | None = None) -> str:
        """Ship the job's working dir and run its entrypoint on the cluster; return the job id."""
        return self._call(f"submitting {submission.source}", None, self.client.submit_job,
                          entrypoint=submission.entrypoint, runtime_env=submission.runtime_env,
                          submission_id=submission_id, metadata={"llavast.job": submission.name})

    def info(self, job_id: str) -> Any:
        return self._call(f"reading job {job_id}", job_id, self.client.get_job_info, job_id)

    def jobs(self) -> list[Any]:
        return list(self._call("listing jobs", None, self.client.list_jobs))

    def status(self, job_id: str) -> str:
        status = self._call(f"reading job {job_id}", job_id, self.client.get_job_status, job_id)
        return str(getattr(status, "value", status))

    def logs(self, job_id: str) -> str:
        return self._call(f"reading the logs of job {job_id}", job_id, self.client.get_job_logs, job_id)

    def stop(self, job_id: str) -> bool:
        """True when a stop was requested, False when the job had already ended."""
        return bool(self._call(f"stopping job {job_id}", job_id, self.client.stop_job, job_id))

    def follow(self, job_id: str, emit: Callable[[str], None]) -> str:
        """Stream the job's logs until it ends (the server closes the stream only then); return its status."""
        self.status(job_id)  # an unknown id fails here, with the message above

        async def tail() -> None:
            async for lines in self.client.tail_job_logs(job_id):
                emit(lines.rstrip("\n"))

        self._call(f"following the logs of job {job_id}", job_id, asyncio.run, tail())
        return self.status(job_id)


def _config(job: Any) -> BaseModel:
    return job.config if hasattr(job, "config") and hasattr(job, "jobs") else job


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
    resolved = resolve_env(config.env_vars, str(job_file), os.environ)
    # The cluster's driver runs the same YAML and resolves the same ${env:NAME} references: ship NAME too.
    referenced = {name: os.environ[name] for name in referenced_names(config.env_vars)}
    env = {"working_dir": str(working_dir), "excludes": EXCLUDES,
           "env_vars": {"PYTHONPATH": "platform:.", **referenced, **resolved}}
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
