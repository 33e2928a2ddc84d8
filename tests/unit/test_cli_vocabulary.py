"""One CLI vocabulary: one command runs any job, one option name per endpoint, one `services` group, user errors
handled once at the root, and MLflow commands that default to the local server `make demo` starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml
from typer.testing import CliRunner

from llavast.cli import app
from llavast.services import LOCAL_MLFLOW_URI, free_port

ROOT = Path(__file__).resolve().parents[2]
RUNS_WORK = {("run",), ("data", "index"), ("eval", "run")}
TALKS_TO_JOBS_API = {("submit",), ("status",), ("logs",), ("stop",)}


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Every leaf command of the CLI (Typer's click objects), by its words."""
    out: dict[tuple[str, ...], Any] = {}
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            out.update(_commands(command, (*prefix, name)))
        else:
            out[(*prefix, name)] = command
    return out


COMMANDS = _commands(typer.main.get_command(app))


def _option(command: Any, flag: str) -> Any:
    return next((p for p in command.params if p.param_type_name == "option" and flag in p.opts), None)


def test_one_name_per_endpoint() -> None:
    assert not [path for path, command in COMMANDS.items() if _option(command, "--address")]  # ambiguous: gone
    for path in RUNS_WORK:
        option = _option(COMMANDS[path], "--ray-address")
        assert option is not None and option.envvar == "RAY_ADDRESS", path
    for path in TALKS_TO_JOBS_API:
        option = _option(COMMANDS[path], "--jobs-address")
        assert option is not None and option.envvar == "RAY_API_SERVER_ADDRESS", path
    assert {p for p, c in COMMANDS.items() if _option(c, "--ray-address")} == RUNS_WORK
    assert {p for p, c in COMMANDS.items() if _option(c, "--jobs-address")} == TALKS_TO_JOBS_API


def test_one_services_group_with_one_set_of_options() -> None:
    services = {path for path in COMMANDS if path[0] == "services"}
    assert services == {("services", "up"), ("services", "down")}
    up = COMMANDS[("services", "up")]
    flags = {opt for p in up.params for opt in p.opts if opt.startswith("--")}
    assert flags >= {"--state-dir", "--port", "--foreground"}


def test_mlflow_commands_default_to_the_demos_server() -> None:
    """Right after `make demo`, `llavast registry list` needs no arguments."""
    demo_uri = yaml.safe_load((ROOT / "jobs/demo/pipeline.yaml").read_text())["tracking"]["uri"]
    assert demo_uri == LOCAL_MLFLOW_URI
    for path in (("registry", "list"), ("registry", "show")):
        option = _option(COMMANDS[path], "--tracking-uri")
        assert option is not None and option.envvar == "MLFLOW_TRACKING_URI" and not option.required, path
        assert option.default == LOCAL_MLFLOW_URI, path
    assert _option(COMMANDS[("services", "up")], "--port").default == int(LOCAL_MLFLOW_URI.rsplit(":", 1)[1])


def test_one_command_runs_any_job() -> None:
    assert ("run",) in COMMANDS and ("train",) not in COMMANDS  # a stage runs like any job: `llavast run`


def test_a_user_error_in_a_nested_command_is_one_line_from_the_root() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(app, ["registry", "list", "--tracking-uri", nowhere])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: MLflow tracking server {nowhere} is unreachable"), lines
    assert "--tracking-uri" in lines[0]  # the registry commands take no job YAML: the hint names their option
    assert "Traceback" not in result.output


def test_version_names_the_platform_and_its_engines() -> None:
    from importlib.metadata import version

    import ray
    import torch

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == (f"llavast {version('llava-st-platform')} (ray {ray.__version__}, "
                                     f"torch {torch.__version__})")
