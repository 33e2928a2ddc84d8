"""Sweeps: Ray Tune over the packing and vocabulary sizes (M_t/M_h/M_w, k1, k2, sigma), the learning rate and
the LoRA rank, scored by grounding quality on a held-out subset.

    space.py       parameters, the discrete points, the constraints, token and memory estimates
    validation.py  the training callback that answers and scores the subset every K steps
    trial.py       Tune's function trainable: a trial's stages on Ray Train V2, reported to Tune and MLflow
    sweep.py       the driver: plan, Tuner (or restore), results, best parameters
    report.py      the trials table (CSV) and picture
    best.py        the best trial's parameters as a job YAML (`--write-best`)
"""
