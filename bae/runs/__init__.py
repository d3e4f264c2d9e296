"""Training runs: the typed YAML config of `bae train`, the run itself on TRL, its checkpoints,
and the preparation of training prompts (`bae prepare-data`)."""
