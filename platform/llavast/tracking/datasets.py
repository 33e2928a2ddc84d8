"""A dataset as an MLflow run input: metadata only (name, source URI, digest, schema, profile), no data.

MLflow shows a run's dataset inputs in the run page and the runs table ("Datasets used"): the name and
digest, the source URI, the schema's columns and the profile (here: the manifest's sample counts).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import DatasetInput, InputTag
from mlflow.types.schema import Array, ColSpec, DataType, Object, Property, Schema
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

_SCALARS = (
    (pa.types.is_boolean, DataType.boolean), (pa.types.is_int64, DataType.long),
    (pa.types.is_integer, DataType.integer), (pa.types.is_float32, DataType.float),
    (pa.types.is_floating, DataType.double), (pa.types.is_binary, DataType.binary),
    (pa.types.is_timestamp, DataType.datetime),
)


def _mlflow_type(arrow: pa.DataType) -> Any:
    if pa.types.is_list(arrow) or pa.types.is_large_list(arrow):
        return Array(_mlflow_type(arrow.value_type))
    if pa.types.is_struct(arrow):
        return Object([Property(f.name, _mlflow_type(f.type), required=not f.nullable) for f in arrow])
    return next((mlflow for test, mlflow in _SCALARS if test(arrow)), DataType.string)  # strings, and the rest


def mlflow_schema(schema: pa.Schema) -> Schema:
    """An Arrow schema as MLflow column specs (what the UI lists under the dataset's schema)."""
    return Schema([ColSpec(_mlflow_type(f.type), f.name, required=not f.nullable) for f in schema])


class _Described(MetaDataset):
    """MLflow's metadata-only dataset, with a profile (MetaDataset has none)."""

    def __init__(self, source_uri: str, name: str, digest: str, schema: Schema | None,
                 profile: Mapping[str, Any]) -> None:
        self._profile = json.dumps(dict(profile), sort_keys=True)
        with warnings.catch_warnings():  # a local path resolves to two equal local sources: MLflow says so
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(source_uri)
        super().__init__(source, name=name, digest=digest, schema=schema)

    @property
    def profile(self) -> str:
        return self._profile

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "profile": self._profile}


def dataset_input(source_uri: str, *, name: str, digest: str, profile: Mapping[str, Any],
                  schema: pa.Schema | None = None, context: str = "training") -> DatasetInput:
    """The run input for a dataset at `source_uri` (an S3 or local URI; the UI shows it as the source)."""
    dataset = _Described(source_uri, name, digest, mlflow_schema(schema) if schema is not None else None, profile)
    return DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])
