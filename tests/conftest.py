"""Shared fixtures. Each real service has its own module under tests/fixtures/; import its fixtures here."""

from tests.fixtures.faulty_s3 import faulty_s3  # noqa: F401
from tests.fixtures.mlflow import mlflow_server  # noqa: F401 - pytest finds fixtures by name
from tests.fixtures.ray_cluster import ray_local  # noqa: F401
from tests.fixtures.s3 import s3_bucket, s3_server  # noqa: F401
from tests.fixtures.train import train_world  # noqa: F401
