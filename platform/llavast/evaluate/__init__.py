"""Evaluation: benchmark files into eval samples (`benchmarks.py`), the release's prompts for them (`prompts.py`),
reading a model's raw answers (`answers.py`) and scoring them exactly (`metrics.py`).

`prompts`, `answers` and `metrics` are pure: no model, no Ray, no MLflow, no I/O (except that the ELC caption
metrics start the Java tools pycocoevalcap ships); `benchmarks` reads files through `llavast.storage`.
Definitions, and where they fix the authors' release: docs/evaluation.md.
"""
