"""Secrets in job configs: `${env:NAME}` references, literal secrets refused, and redaction for logs.

A job YAML never holds a credential. It holds a reference, `${env:NAME}`, which the driver resolves once
from its own environment (`split_env`). Literal values travel to the workers in Ray's runtime env; resolved
references travel as a `SecretEnv`, an argument of the worker function that every process needing it applies
to its own environment. Ray logs each runtime env it creates (runtime_env_agent.log) and records the worker
runtime env of a Train run; a `SecretEnv` is neither, and its repr names the variables only. What is logged
(MLflow params, error messages) goes through `redact_config` / `redact`: environment values become
`<redacted>` and the password of any `scheme://user:password@host` URL is masked.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from llavast.errors import ConfigError

REDACTED = "<redacted>"
ENV_REF = re.compile(r"^\$\{env:(?P<name>[A-Za-z_][A-Za-z0-9_]*)\}$")
# "token" only as a whole word of the key (HF_TOKEN, auth-token), not a count or a module (max_new_tokens,
# embed_tokens, tokenizer)
SECRET_KEY = re.compile(r"(secret|password|passwd|(?:^|[_\-.])token(?:$|[_\-.])|api[_-]?key|access[_-]?key"
                        r"|private[_-]?key|credential)", re.IGNORECASE)
URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*):(?P<password>[^\s@/]+)@")
AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA)[0-9A-Z]{16}\b")
TOKEN_CHARS = re.compile(r"^[A-Za-z0-9+/=_\-.]+$")
HEX_TOKEN = re.compile(r"^[0-9a-fA-F]{32,}$")
TOKEN_MIN_LENGTH = 20
TOKEN_MIN_ENTROPY = 3.5  # bits per character: random mixed-case tokens sit above, repetitive strings below
USE_ENV_REF = "write ${env:NAME} and export NAME in the environment of the process that runs the job"


def redact(text: str) -> str:
    """`text` with every URL password masked: `https://user:pw@host` -> `https://user:<redacted>@host`."""
    return URL_PASSWORD.sub(lambda m: f"{m['head']}:{REDACTED}@", text)


def redact_config(dump: Mapping[str, Any]) -> dict[str, Any]:
    """A job config dump fit for logging: `env_vars` values replaced by `<redacted>` (the names stay), URL
    passwords masked in every string."""

    def walk(value: Any, key: str | None) -> Any:
        if isinstance(value, Mapping):
            if key == "env_vars":
                return {name: REDACTED for name in value}
            return {k: walk(v, str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [walk(v, None) for v in value]
        return redact(value) if isinstance(value, str) else value

    return walk(dump, None)


def resolve_env(env_vars: Mapping[str, str], source: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The job's `env_vars` with every `${env:NAME}` replaced by `environ[NAME]`; literals pass through.
    References to unset variables are one error naming each key and variable (`check_env_set`)."""
    check_env_set({source: env_vars}, environ)
    out = {}
    for key, value in env_vars.items():
        ref = ENV_REF.match(value)
        out[key] = value if ref is None else environ[ref["name"]]
    return out


def check_env_set(env_vars_by_source: Mapping[str, Mapping[str, str]], environ: Mapping[str, str]) -> None:
    """Every `${env:NAME}` reference of the given `env_vars` (keyed by where they come from: a job file, a
    pipeline's node) is set in `environ`, or one ConfigError lists all that are not."""
    unset = [f"{source}: env_vars.{key}: references ${{env:{ref['name']}}} but {ref['name']} is not set here"
             for source, env_vars in env_vars_by_source.items() for key, value in env_vars.items()
             if (ref := ENV_REF.match(value)) is not None and ref["name"] not in environ]
    if unset:
        raise ConfigError("; ".join(unset) + f": export {'it' if len(unset) == 1 else 'them'} before running the job")


@dataclass(frozen=True)
class SecretEnv:
    """Environment values resolved from `${env:NAME}` references, for the processes that need them.

    Its repr (which Ray Train records for the worker function's arguments) names the variables only.
    """

    values: dict[str, str] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return f"SecretEnv({', '.join(f'{name}={REDACTED}' for name in sorted(self.values))})"

    __str__ = __repr__

    def apply(self) -> None:
        """Set the variables in this process's environment (a Ray worker's own, before it reads any)."""
        os.environ.update(self.values)


def split_env(env_vars: Mapping[str, str], source: str, environ: Mapping[str, str]) -> tuple[dict[str, str], SecretEnv]:
    """(the literal `env_vars`, the resolved `${env:NAME}` references as a SecretEnv); an unset NAME is an error
    (see `resolve_env`)."""
    resolved = resolve_env(env_vars, source, environ)
    secret = {key: resolved[key] for key, value in env_vars.items() if ENV_REF.match(value)}
    return {k: v for k, v in resolved.items() if k not in secret}, SecretEnv(secret)


def referenced_names(env_vars: Mapping[str, str]) -> list[str]:
    """The NAMEs of the `${env:NAME}` references among `env_vars` values."""
    return sorted({m["name"] for m in map(ENV_REF.match, env_vars.values()) if m is not None})


def _entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(c / len(text) * math.log2(c / len(text)) for c in counts.values())


def secret_shape(value: str, env_value: bool) -> str | None:
    """Why `value` looks like a credential, or None. Everywhere: an AWS access key id, a URL with a password.
    In an environment value also: a long high-entropy token (API keys, secret keys, long hex strings)."""
    if ENV_REF.match(value):
        return None
    if AWS_KEY_ID.search(value):
        return "an AWS access key id"
    if URL_PASSWORD.search(value):
        return "a URL with a password (user:password@)"
    if env_value and (HEX_TOKEN.match(value) or _looks_random(value)):
        return "a high-entropy token"
    return None


def _looks_random(value: str) -> bool:
    """A long token of mixed-case letters and digits with high entropy (API keys, AWS secret keys); names,
    paths and versions are lower-case or carry separators of their own, and stay below."""
    return (len(value) >= TOKEN_MIN_LENGTH and bool(TOKEN_CHARS.match(value)) and not value.startswith("/")
            and any(c.isdigit() for c in value) and any(c.islower() for c in value)
            and any(c.isupper() for c in value) and _entropy(value) >= TOKEN_MIN_ENTROPY)


def check_secrets(raw: Any, source: str, path: str = "") -> None:
    """Refuse literal secrets in a raw job mapping: by key name (a key that names a secret must hold an
    `${env:NAME}` reference) and by value shape (see `secret_shape`).

    Job configs are logged as MLflow params and shipped in runtime envs; a literal credential in one would
    end up in both. Cloud credentials come from the standard provider chain, never from YAML.
    """
    if isinstance(raw, dict):
        for key, value in raw.items():
            where = f"{path}.{key}" if path else str(key)
            if SECRET_KEY.search(str(key)) and isinstance(value, (str, int, float)) and value != "":
                if not (isinstance(value, str) and ENV_REF.match(value)):
                    raise ConfigError(f"{source}: {where}: looks like a secret written as a literal value; "
                                      f"{USE_ENV_REF}")
            check_secrets(value, source, where)
    elif isinstance(raw, list):
        for i, item in enumerate(raw):
            check_secrets(item, source, f"{path}[{i}]")
    elif isinstance(raw, str):
        shape = secret_shape(raw, env_value=".env_vars." in f".{path}")
        if shape is not None:
            raise ConfigError(f"{source}: {path}: the value looks like {shape}, written as a literal; "
                              f"{USE_ENV_REF} (URL credentials: the client's own variables, e.g. "
                              "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD)")
