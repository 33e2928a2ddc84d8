"""Evaluation: reading a model's raw answers (`answers.py`) and scoring them exactly (`metrics.py`).

Both modules are pure: no model, no Ray, no MLflow, no I/O (except that the ELC caption metrics start the
Java tools pycocoevalcap ships). Definitions, and where they fix the authors' release: docs/evaluation.md.
"""
