"""Evaluation: benchmark files into eval samples (`benchmarks.py`), the release's prompts for them (`prompts.py`),
reading a model's raw answers (`answers.py`), scoring them exactly (`metrics.py`) and drawing them next to
the ground truth (`pictures.py`, matplotlib figures).

`prompts`, `answers`, `metrics` and `pictures` are pure: no model, no Ray, no MLflow, no I/O (except that the
ELC caption metrics start the Java tools pycocoevalcap ships); `benchmarks` reads files through `llavast.storage`.
Definitions, and where they fix the authors' release: docs/evaluation.md.
"""
