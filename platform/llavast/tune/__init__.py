"""Sweeps: Ray Tune over the packing and vocabulary sizes (M_t/M_h/M_w, k1, k2, sigma), the learning rate and
the LoRA rank, scored by grounding quality on a held-out subset.

    space.py       parameters, the discrete points, the constraints, token and memory estimates
    validation.py  the training callback that answers and scores the subset every K steps
    trial.py       Tune's function trainable: a trial's stages on Ray Train V2, reported to Tune and MLflow
    plan.py        the base jobs, the model's shapes, the valid space, how many trials and how many at once
    tuner.py       the searcher, the scheduler, the callbacks and the Tuner (new or restored)
    sweep.py       the driver: plan -> the sweep's MLflow run -> Tuner -> trials table -> best trial
    report.py      the trials table (CSV) and picture
    best.py        the best trial: best.json, a stage run with it (`tuned_by`), a job YAML (`--write-best`)
    tables.py      docs/tuning.md's tables
"""
