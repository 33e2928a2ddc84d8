"""Orchestration: the job DAG runner, node executors, Ray Jobs submission."""
