"""Progressive training on Ray Train + DeepSpeed: stage policies, the per-worker loop, DeepSpeed configs,
checkpoints and stage artifacts, the TorchTrainer builder. Import the submodule you need."""
