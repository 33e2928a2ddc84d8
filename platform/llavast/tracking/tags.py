"""Every `llavast.*` tag the platform puts on MLflow runs and model versions, in one place: what writes it, and
what reads it back (the registry commands, the DAG's "already done?" check, the sweep's trial lookup)."""

from __future__ import annotations

# What a run is, and how a re-run finds it again
KIND = "llavast.kind"  # "stage", "eval", "pipeline", "sweep", "sweep-trial"
RUN_KEY = "llavast.run_key"  # a run created once per key: a re-run continues it (Tracker.ensure_run)
RUN_NAME = "llavast.run_name"  # a stage's run name (job, stage, config fingerprint): one version per run
SOURCE = "llavast.source"  # a pipeline run's YAML

# A stage's lineage, on its run and its registered version
STAGE = "llavast.stage"
BASE = "llavast.base"
INIT_FROM = "llavast.init_from"
PARENT_ARTIFACT = "llavast.parent_artifact"
PARENT_VERSION = "llavast.parent_version"
DATA_MANIFEST = "llavast.data_manifest"
FINGERPRINT = "llavast.fingerprint"  # the stage job's config fingerprint
LINEAGE = (STAGE, PARENT_VERSION, INIT_FROM, DATA_MANIFEST, FINGERPRINT)  # what `llavast registry` shows

# What a stage run produced, or why it did not
ARTIFACT = "llavast.artifact"
MODEL_VERSION = "llavast.model_version"  # "<registered model>/<version>"
ERROR = "llavast.error"

# Pipelines: a version made by a node, and each node's state on the pipeline's run
NODE_FINGERPRINT = "llavast.node_fingerprint"
NODE_STATE_PREFIX = "llavast.node."  # llavast.node.<node> = its status
HARDWARE_PREFIX = "llavast.hardware."  # llavast.hardware.<node id> = the node's host, CPUs, memory and GPUs

# Evaluations: on the eval run and on the version it scored
EVAL_RESULTS = "llavast.eval_results"

# Sweeps: the parent's key on every trial run, and each trial's fate
SWEEP = "llavast.sweep"
TRIAL_ID = "llavast.trial_id"
STOPPED_EARLY = "llavast.stopped_early"
STEPS = "llavast.steps"
